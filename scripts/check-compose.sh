#!/bin/sh
# Validates docker-compose.yml without a Docker engine: the compose schema (docker-compose v1's
# `config`, which needs no daemon), then the properties the stack relies on, checked on the
# rendered file so anchors and ${VAR:-default} are resolved: pinned images, a healthcheck on
# every long-running service, a condition on every depends_on (service_healthy, or
# service_completed_successfully for a one-shot), ports on 127.0.0.1 only, the API key handed
# from bootstrap to the workers, and an example publisher that sends only jobs a fresh
# free-edition Metabase can run.
#
# Needs: docker-compose (Debian/Ubuntu: apt-get install docker-compose) and Python 3 with
# PyYAML (python3-yaml, a dependency of that package). Installs nothing.
set -eu

cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "check-compose: docker-compose is not installed (apt-get install docker-compose)" >&2
    exit 1
fi

# Schema and interpolation.
docker-compose -f docker-compose.yml config -q

# The rendered file, read by the Python that docker-compose itself runs on when there is one.
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
docker-compose -f docker-compose.yml config | "$PY" -c '
import sys, yaml

c = yaml.safe_load(sys.stdin)
s = c["services"]
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

want = {"rabbitmq", "redis", "postgres", "metabase", "bootstrap", "worker", "publish-examples"}
need(set(s) == want, "services are %s, expected %s" % (sorted(s), sorted(want)))

for name, svc in s.items():
    image = svc.get("image", "")
    need(":" in image and not image.endswith(":latest"), "%s: image %r is not pinned" % (name, image))

# Long-running services report health; one-shots (restart "no") report their exit status, and
# whoever needs them waits for it.
one_shots = {n for n, svc in s.items() if str(svc.get("restart", "")) == "no"}
need(one_shots == {"bootstrap", "publish-examples"}, "one-shot services are %s" % sorted(one_shots))
for name, svc in s.items():
    if name not in one_shots:
        need("test" in svc.get("healthcheck", {}), "%s: no healthcheck" % name)
    for dep, spec in (svc.get("depends_on") or {}).items():
        c = spec.get("condition") if isinstance(spec, dict) else None
        want_c = "service_completed_successfully" if dep in one_shots else "service_healthy"
        need(c == want_c, "%s: depends_on %s should have condition %s, has %s" % (name, dep, want_c, c))
    for port in svc.get("ports", []):
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        need(host_ip == "127.0.0.1", "%s: port %s is published beyond 127.0.0.1" % (name, port))

need(s["metabase"]["image"].startswith("metabase/metabase:v0.56."), "metabase: not a v0.56 image")
need(s["metabase"]["environment"].get("MB_DB_TYPE") == "postgres", "metabase: app DB is not postgres")

mbprov = ["bootstrap", "worker", "publish-examples"]
images = {s[n].get("image") for n in mbprov}
need(len(images) == 1, "mbprov services use several images: %s" % images)
need(all("build" in s[n] for n in mbprov), "every mbprov service should build the one image")

def cond(svc, dep):
    return s[svc].get("depends_on", {}).get(dep, {}).get("condition")

w = s["worker"]
need(w.get("deploy", {}).get("replicas") == 2, "worker: replicas is not 2")
need(cond("worker", "bootstrap") == "service_completed_successfully", "worker: must wait for bootstrap to succeed")
need(cond("worker", "rabbitmq") == "service_healthy", "worker: must wait for a healthy rabbitmq")
need(cond("worker", "redis") == "service_healthy", "worker: must wait for a healthy redis")
need(cond("metabase", "postgres") == "service_healthy", "metabase: must wait for a healthy postgres")
need(cond("publish-examples", "rabbitmq") == "service_healthy", "publish-examples: must wait for rabbitmq")
need(cond("publish-examples", "worker") == "service_healthy", "publish-examples: must wait for healthy workers")
need(cond("bootstrap", "metabase") == "service_healthy", "bootstrap: must wait for a healthy metabase")

b = s["bootstrap"]
need(b.get("command") == ["bootstrap-metabase"], "bootstrap: command is not bootstrap-metabase")
for var in ["MB_ADMIN_EMAIL", "MB_ADMIN_PASSWORD", "METABASE_SITE_URL", "METABASE_API_KEY_FILE"]:
    need(b["environment"].get(var), "bootstrap: %s is not set" % var)

key_file = w["environment"].get("METABASE_API_KEY_FILE", "")
need(key_file == b["environment"].get("METABASE_API_KEY_FILE"), "bootstrap and worker read different key files")
def volume_for(svc, path):
    for v in s[svc].get("volumes", []):
        parts = v.split(":") if isinstance(v, str) else [v.get("source"), v.get("target")]
        if len(parts) >= 2 and key_file.startswith(parts[1].rstrip("/") + "/"):
            return parts[0]
need(volume_for("bootstrap", key_file) is not None, "bootstrap: the key file is not on a volume")
need(volume_for("bootstrap", key_file) == volume_for("worker", key_file), "bootstrap and worker do not share the key volume")
need(w["environment"].get("METABASE_SITE_URL") == "http://metabase:3000", "worker: METABASE_SITE_URL")
need(w["environment"].get("MBPROV_HTTP_ADDR", "").startswith("0.0.0.0:"), "worker: /healthz must listen beyond loopback")
for var in ["AMQP_URL", "REDIS_URL"]:
    need(w["environment"].get(var), "worker: %s is not set" % var)

p = s["publish-examples"]
need(any(str(v).endswith(":/jobs:ro") for v in p.get("volumes", [])), "publish-examples: jobs/ is not mounted read-only at /jobs")
cmd = p.get("command", [])
need(cmd[:1] == ["publish"] and all(a.startswith("/jobs/") for a in cmd[1:]) and len(cmd) > 1, "publish-examples: does not publish examples from /jobs")
# Only what a fresh free-edition Metabase can run: no sandboxes (Pro/Enterprise), no collection
# other than the root (a fresh Metabase has no "Shared" collection 2), database 1 only (its
# Sample Database), and nothing that undoes the demo (tenant.deleted, user.deactivated).
import json
for arg in cmd[1:]:
    env = json.load(open("jobs/" + arg[len("/jobs/"):]))
    text = json.dumps(env)
    kind, payload = env.get("kind"), env.get("payload", {})
    need(kind in ("tenant.created", "user.upserted", "users.synced"), "publish-examples: %s is a %s job" % (arg, kind))
    need("sandbox" not in text and "shared_collection_id" not in payload, "publish-examples: %s needs sandboxes or a shared collection" % arg)
    need(payload.get("database_id", 1) == 1, "publish-examples: %s names a database other than the Sample Database" % arg)

if problems:
    for m in problems:
        print("check-compose: " + m, file=sys.stderr)
    sys.exit(1)
'

# Defaults can be overridden from the environment.
MB_ADMIN_PASSWORD='pa$$-word-1' METABASE_IMAGE=metabase/metabase:v0.56.3 \
    docker-compose -f docker-compose.yml config |
    grep -q 'image: metabase/metabase:v0.56.3' || {
    echo "check-compose: METABASE_IMAGE does not override the Metabase image" >&2
    exit 1
}

echo "docker-compose.yml: valid"
