"""Checks the Helm chart: lint, render, validate against Kubernetes' schemas, and the promises
the chart makes (probes, the key as a mounted file, graceful termination, KEDA on P.jobs).

Run by scripts/check-helm.sh, which provides helm-python-sdk and kubernetes-validate.
"""

import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

# The oldest Kubernetes version the chart supports (policy/v1 PDB, seccompProfile field).
KUBE_VERSION = "1.30.0"
# Custom resources kubernetes-validate has no schema for, with the fields the chart needs.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["selector", "endpoints"],
    ("keda.sh/v1alpha1", "ScaledObject"): ["scaleTargetRef", "triggers"],
}

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def schema_accepts(chart_dir, values):
    """Whether values.schema.json accepts the values merged over the defaults (as helm does)."""
    with helm.Chart.load(chart_dir) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
            return True
        except helm.HelmValuesError as e:
            print(f"values refused: {e}")
            return False


def render(chart_dir, values):
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name="prov", namespace="mbprov")
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def validate(label, docs):
    for path, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CUSTOM:
            missing = [f for f in CUSTOM[key] if f not in doc.get("spec", {})]
            if missing or not doc.get("metadata", {}).get("name"):
                fail(f"{label} {path}: {key[1]} lacks {missing or 'metadata.name'}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{label} {path}: {e.message} at {'.'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(f"{label} {path}: no schema for {key}: {e}")


def by_kind(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def duration_seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]]


def check_promises(label, docs, values):
    [deployment] = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}

    def value(name):
        return env.get(name, {}).get("value")

    if value("MBPROV_HTTP_ADDR") != "0.0.0.0:9464":
        fail(f"{label}: MBPROV_HTTP_ADDR must be 0.0.0.0:9464 in the pod")
    if worker["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail(f"{label}: liveness probe is not /healthz")
    if worker["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(f"{label}: readiness probe is not /readyz")
    if "METABASE_API_KEY" in env:
        fail(f"{label}: the key must come as a file, not METABASE_API_KEY")
    key_file = value("METABASE_API_KEY_FILE") or ""
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    mount = mounts.get(os.path.dirname(key_file))
    secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
    if mount not in secret_volumes:
        fail(f"{label}: METABASE_API_KEY_FILE ({key_file}) is not in a mounted Secret")
    grace = duration_seconds(value("MBPROV_SHUTDOWN_GRACE"))
    if pod["terminationGracePeriodSeconds"] <= grace:
        fail(f"{label}: terminationGracePeriodSeconds must exceed MBPROV_SHUTDOWN_GRACE")
    for name in ("AMQP_URL", "REDIS_URL"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            fail(f"{label}: {name} must come from a Secret")
    if "limits" not in worker.get("resources", {}):
        fail(f"{label}: no resource limits")
    if not by_kind(docs, "PodDisruptionBudget"):
        fail(f"{label}: no PodDisruptionBudget")

    keda = values.get("keda", {}).get("enabled", False)
    scaled = by_kind(docs, "ScaledObject")
    if keda:
        [so] = scaled
        trigger = so["spec"]["triggers"][0]
        if trigger["metadata"]["queueName"] != "mbprov.jobs":
            fail(f"{label}: KEDA does not watch mbprov.jobs")
        if so["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            fail(f"{label}: KEDA scales another object")
        if "replicas" in deployment["spec"]:
            fail(f"{label}: replicas must be left to KEDA")
    elif scaled:
        fail(f"{label}: a ScaledObject although keda.enabled is false")


def main(chart_dir):
    report = helm.lint(chart_dir, strict=True, kube_version=f"v{KUBE_VERSION}")
    for m in report.get("messages", []):
        print(f"lint [{m['severity']}] {m['path']}: {m['error']}")
        if m["severity"] >= 2:
            fail(f"helm lint: {m['error']}")
    for e in report.get("errors") or []:
        fail(f"helm lint: {e}")

    cases = [("defaults", {})]
    ci_dir = os.path.join(chart_dir, "ci")
    for name in sorted(os.listdir(ci_dir)):
        with open(os.path.join(ci_dir, name)) as f:
            cases.append((name, yaml.safe_load(f) or {}))
    for label, values in cases:
        if not schema_accepts(chart_dir, values):
            fail(f"{label}: values.schema.json refuses the values")
        docs = render(chart_dir, values)
        kinds = sorted(d["kind"] for _, d in docs)
        print(f"{label}: {len(docs)} objects: {', '.join(kinds)}")
        validate(label, docs)
        check_promises(label, docs, values)

    # Values the schema must refuse, so it is not a no-op either.
    for bad in ({"worker": {"concurrency": 0}}, {"metabase": {"url": "metabase:3000"}},
                {"keda": {"maxReplicaCount": "lots"}}):
        if schema_accepts(chart_dir, bad):
            fail(f"values.schema.json accepted {bad}")

    # A broken manifest must fail: the validation is not a no-op.
    try:
        kubernetes_validate.validate(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
             "spec": {"replicas": "two"}},
            KUBE_VERSION, strict=True)
        fail("kubernetes-validate accepted a broken Deployment")
    except kubernetes_validate.ValidationError:
        pass

    if failures:
        print(f"{len(failures)} problem(s) in the chart")
        return 1
    print(f"chart OK (helm SDK {helm.helm_sdk_version()}, Kubernetes {KUBE_VERSION} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
