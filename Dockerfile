# syntax=docker/dockerfile:1
#
# mbprov in a small image that runs as a non-root user.
#   docker build -t mbprov .
#   docker run --rm mbprov --help
# The default command is `mbprov worker`; docker-compose.yml also runs `bootstrap-metabase`
# and `publish` from this image.

FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependencies first, built against stub sources, so a change under src/ reuses this layer
# instead of recompiling every crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# COPY keeps the files' own times, which can be older than the stub build's output: touch them
# so cargo sees the crate as changed.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/mbprov /usr/local/bin/mbprov

FROM debian:bookworm-slim
# ca-certificates: https to Metabase and amqps/rediss. curl: the compose health check of
# the worker's /healthz.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# /run/mbprov belongs to the runtime user so that a named volume mounted there (the API key
# handed from bootstrap-metabase to the workers) starts out writable by it.
RUN groupadd --system --gid 10001 mbprov \
 && useradd --system --uid 10001 --gid mbprov --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mbprov \
 && install -d -o mbprov -g mbprov -m 0700 /run/mbprov
COPY --from=builder /usr/local/bin/mbprov /usr/local/bin/mbprov

USER 10001:10001
# Inside a container the ops endpoint must listen beyond loopback to be probed at all.
ENV MBPROV_HTTP_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["mbprov"]
CMD ["worker"]
