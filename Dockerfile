# syntax=docker/dockerfile:1
#
# mbprov in a small image that runs as a non-root user.
#   docker build -t mbprov .
#   docker run --rm mbprov --help
# The default command is `mbprov worker`; docker-compose.yml also runs `bootstrap-metabase`
# and `publish` from this image.
#
# CI cannot run an engine, so scripts/check_dockerfile.py replays the build stage below on the
# host (same COPY, same .dockerignore, same cargo command) and fails when it would not build.
# Keep its RUN lines to commands joined by `&&` (the script says which ones it runs).

# The Rust of the image is the one CI builds with (the check refuses an older one).
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# The whole context, not a list of paths: whatever Cargo.toml comes to need (another bench,
# a build script, an include_str! of a schema) is there, so this stage cannot drift from the
# manifest. .dockerignore keeps target/, .git and local secrets out.
COPY . .

# BuildKit cache mounts keep the registry and the compiled dependencies between builds, so a
# change under src/ recompiles mbprov only. `dist` is the release profile without debug info,
# stripped (Cargo.toml). The binary leaves the cache mount in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist \
 && install -D -m 0755 target/dist/mbprov /out/mbprov

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
COPY --from=builder /out/mbprov /usr/local/bin/mbprov

USER 10001:10001
# Inside a container the ops endpoint must listen beyond loopback to be probed at all.
ENV MBPROV_HTTP_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["mbprov"]
CMD ["worker"]
