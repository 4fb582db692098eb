#!/usr/bin/env bash
# Lints deploy/helm/mbprov, renders it (defaults, and every option on) and validates the output
# against Kubernetes' schemas. No helm binary is needed: the tools come from PyPI, pinned, in a
# virtualenv kept between runs:
#   helm-python-sdk  - Helm's own Go SDK (v4) as a library: `helm lint` and `helm template`;
#   kubernetes-validate - Kubernetes' OpenAPI schemas, bundled, for every resource kind it knows.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"
VENV="${MBPROV_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mbprov-ci}/helm-venv"

if [ "$(cat "$VENV/.tools" 2>/dev/null)" != "$TOOLS" ]; then
  echo "installing $TOOLS into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # the list is meant to split
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $TOOLS
  echo "$TOOLS" > "$VENV/.tools"
fi
"$VENV/bin/python" scripts/check_helm.py deploy/helm/mbprov
