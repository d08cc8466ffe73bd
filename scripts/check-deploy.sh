#!/usr/bin/env bash
# Validates deploy/ offline with the tools scripts/test-deps.sh installed into .venv:
#   - yamllint: every YAML file (Helm templates excepted: they are Go templates, not YAML);
#   - kubernetes-validate --strict: the Kubernetes manifests against the bundled API schemas;
#   - check-jsonschema: the compose file against the Compose specification (built in), and the
#     Helm chart's values.yaml against its own values.schema.json (the schema helm itself applies).
# Not checked here: rendering the Helm templates (no Helm renderer is available from the package
# registries this project may use) and the Dockerfile and systemd unit (no engine / systemd here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${STOREGATE_VENV:-.venv}
bin() {
    [[ -x "$VENV/bin/$1" ]] || { echo "check-deploy: $VENV/bin/$1 missing; run scripts/test-deps.sh" >&2; exit 1; }
    echo "$VENV/bin/$1"
}
K8S_VERSION=${STOREGATE_K8S_VERSION:-1.30.0}

"$(bin yamllint)" --strict -c deploy/.yamllint.yaml deploy
# secret.example.yaml is a real Secret shape too; validate everything in the folder.
"$(bin kubernetes-validate)" --strict --quiet -k "$K8S_VERSION" deploy/kubernetes/*.yaml
"$(bin check-jsonschema)" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
"$(bin check-jsonschema)" --schemafile deploy/helm/storegate/values.schema.json deploy/helm/storegate/values.yaml
# The sample configuration and the ConfigMap's copy must stay the same file.
python3 - <<'PY'
import sys, pathlib
sys.path.insert(0, "")
text = pathlib.Path("deploy/kubernetes/configmap.yaml").read_text()
body = text.split("storegate.toml: |\n", 1)[1]
cm = "\n".join(l[4:] if l.startswith("    ") else l for l in body.splitlines()).strip()
ref = "\n".join(l for l in pathlib.Path("deploy/storegate.toml").read_text().splitlines() if not l.startswith("#")).strip()
strip = lambda s: "\n".join(l.split(" #")[0].rstrip() for l in s.splitlines() if not l.lstrip().startswith("#"))
if strip(cm) != strip(ref):
    sys.exit("check-deploy: deploy/kubernetes/configmap.yaml differs from deploy/storegate.toml")
PY
# The shipped binary is `cargo build --release --bin storegate` (deploy/Dockerfile): it must leave out
# the development OpenID provider and the BigCommerce simulator (the `devkit` feature, which only
# tests, benches and `make demo` turn on). Read from Cargo's feature resolution, no build needed;
# the second query proves the pattern matches when the feature is on.
shipped_features() { cargo tree --quiet -e normal,build,features -i storegate "$@"; }
if grep -Eq -- '--(all-)?features' deploy/Dockerfile; then
    echo "check-deploy: deploy/Dockerfile builds with extra features; the shipped binary must be the default build" >&2
    exit 1
fi
if shipped_features | grep -q 'feature "devkit"'; then
    echo "check-deploy: the default build enables the devkit feature (development OP, BigCommerce simulator); remove it from [features] default" >&2
    exit 1
fi
shipped_features --features devkit | grep -q 'feature "devkit"' \
    || { echo "check-deploy: cannot read the build's features from cargo tree" >&2; exit 1; }
echo "check-deploy: deploy/ is valid"
