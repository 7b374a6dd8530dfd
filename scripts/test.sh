#!/usr/bin/env bash
# The project's test suite: what README.md's quick start calls and what CI runs.
# Installs what it needs by itself (through the project's own scripts) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The semantic policy analysis proves its findings with the cvc5 SMT solver (Debian package).
if ! command -v cvc5 >/dev/null 2>&1 && [ -z "${CVC5:-}" ]; then
    echo "== installing cvc5 (apt-get)"
    source scripts/lib/apt.sh
    apt_install cvc5
fi

# The Redis state store's tests (policy-layer/tests/redis_state.rs) start Debian's redis-server.
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER:-}" ]; then
    echo "== installing redis-server (apt-get)"
    source scripts/lib/apt.sh
    apt_install redis-server
fi

# tests/tests/prometheus.rs runs a real Prometheus and promtool (Debian package).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "== installing prometheus (apt-get)"
    source scripts/lib/apt.sh
    apt_install prometheus
fi

# tests/tests/govern.rs starts the official Python SDK's MCP server (.venv/interop, shared with
# interop/run.sh).
tests/python/venv.sh

echo "== build (binaries the end-to-end tests start)"
cargo build --workspace --bins

echo "== unit, integration and end-to-end tests"
cargo test --workspace --no-fail-fast

echo "== benches and examples compile (timed only by hand, see README; dev profile, one build)"
cargo build --workspace --benches --examples

echo "== the worked policy example validates, its cases pass and its recording replays unchanged"
target/debug/policy-sidecar validate --config examples/policies/policy-sidecar.toml
target/debug/policy-sidecar test --config examples/policies/policy-sidecar.toml examples/policies/cases.yaml
target/debug/policy-sidecar replay --config examples/policies/policy-sidecar.toml --policies examples/policies/policies examples/policies/recording.jsonl
target/debug/policy-sidecar validate --config examples/temporal/policy-sidecar.toml
target/debug/policy-sidecar test --config examples/temporal/policy-sidecar.toml examples/temporal/cases.yaml

echo "== temporal policies against Dogwood's reference interpreter (difftest/, its own lockfile)"
scripts/difftest.sh

echo "== deploy manifests, Helm chart and compose file validate"
scripts/validate-deploy.sh

echo "== the OCI image: deploy/Dockerfile built with buildah from the debug binaries, run once"
scripts/image.sh --bin-dir target/debug --check --scratch-storage

echo "== fuzz targets, a short round from the committed seeds (longer: scripts/fuzz.sh 1500)"
scripts/fuzz.sh 30

echo "== interop with the official Python and TypeScript MCP SDKs"
interop/run.sh
