#!/usr/bin/env bash
# Interop: MCP clients nobody here wrote, through the real policy-sidecar (JWT auth), in front of
# the real demo-tool-server (SSE answers, and --json-response), with oauth2-mock-server as the
# identity provider.
#
#   interop/run.sh            # from anywhere; needs python3 (3.10+), node 20+, npm
#
# Installs its own dependencies into ignored folders: a venv in .venv/interop (the official
# Python SDK, `mcp` 2.x, versions from interop/requirements.lock) and interop/node_modules
# (`npm ci`: the official TypeScript SDK and oauth2-mock-server). A second run reuses both.
# Builds nothing when target/debug already holds the binaries (scripts/test.sh builds them).
#
# Prints `PASS name` / `FAIL name: why` per check and ends with `N passed, N failed`; exits 1 on
# any failure. Every port is picked by the OS; every wait is bounded; every process it starts is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INTEROP="$ROOT/interop"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
VENV="$ROOT/.venv/interop"
PY="$VENV/bin/python"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcp-policy-interop.XXXXXX")
PIDS=()

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each process up to 5 s, then kill it.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0

# Counts the PASS/FAIL lines read from stdin.
count() {
    local line
    while IFS= read -r line; do
        case "$line" in
            PASS\ *) PASSED=$((PASSED + 1)) ;;
            FAIL\ *) FAILED=$((FAILED + 1)) ;;
        esac
    done
}

fail() {
    printf 'FAIL %s\n' "$*"
    FAILED=$((FAILED + 1))
}

finish() {
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    if [ "$FAILED" -ne 0 ]; then
        exit 1
    fi
    exit 0
}

# A setup step that cannot go on: report it as a failure and stop.
abort() {
    fail "setup: $*"
    finish
}

# --- dependencies -------------------------------------------------------------------------

stamp_of() {
    sha256sum "$@" | sha256sum | cut -d' ' -f1
}

install_python() {
    local stamp
    stamp=$(stamp_of "$INTEROP/requirements.lock")
    if [ -x "$PY" ] && [ "$(cat "$VENV/.interop-stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "== interop: installing the Python MCP SDK into .venv/interop"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || abort "python3 is older than 3.10"
    python3 -m venv "$VENV"
    timeout 600 "$PY" -m pip install --quiet --disable-pip-version-check \
        -r "$INTEROP/requirements.lock"
    echo "$stamp" >"$VENV/.interop-stamp"
}

install_node() {
    local stamp
    stamp=$(stamp_of "$INTEROP/package.json" "$INTEROP/package-lock.json")
    if [ "$(cat "$INTEROP/node_modules/.interop-stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "== interop: npm ci (TypeScript MCP SDK, oauth2-mock-server)"
    (cd "$INTEROP" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
    echo "$stamp" >"$INTEROP/node_modules/.interop-stamp"
}

install_python
install_node

if [ ! -x "$BIN/policy-sidecar" ] || [ ! -x "$BIN/demo-tool-server" ]; then
    echo "== interop: building policy-sidecar and demo-tool-server"
    (cd "$ROOT" && cargo build -p refund-tool -p policy-sidecar)
fi

PY_SDK=$("$PY" -c 'import importlib.metadata as m; print(m.version("mcp"))')
TS_SDK=$(node -p 'require("./interop/node_modules/@modelcontextprotocol/sdk/package.json").version')
IDP_VERSION=$(node -p 'require("./interop/node_modules/oauth2-mock-server/package.json").version')
echo "== interop: python mcp $PY_SDK, @modelcontextprotocol/sdk $TS_SDK, oauth2-mock-server $IDP_VERSION"

# --- processes ----------------------------------------------------------------------------

# start NAME CMD...: runs CMD in the background, output in $WORK/NAME.out and .err.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
}

# wait_line NAME PREFIX: prints the rest of the first stdout line of NAME starting with PREFIX,
# waiting up to 20 s.
wait_line() {
    local name=$1 prefix=$2 line
    for _ in $(seq 200); do
        line=$(grep -m1 "^$prefix" "$WORK/$name.out" 2>/dev/null || true)
        if [ -n "$line" ]; then
            printf '%s\n' "${line#"$prefix"}"
            return 0
        fi
        sleep 0.1
    done
    echo "no line starting with '$prefix' from $name within 20 s; stderr:" >&2
    tail -n 20 "$WORK/$name.err" >&2 || true
    return 1
}

# wait_ready ADMIN_URL: waits up to 20 s for /readyz to answer 200.
wait_ready() {
    local admin=$1
    for _ in $(seq 200); do
        if curl -fsS --max-time 2 -o /dev/null "$admin/readyz" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

GATEWAY="arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"

mkdir -p "$WORK/policies"
cat >"$WORK/policies/refund.cedar" <<EOF
// The refund policy of the seeds (AgentCore's getting-started example).
@id("refund_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"$GATEWAY")
when { context.input.amount.lessThan(decimal("1000.0")) };

// Any non-empty order id (a permit without conditions is refused as overly permissive).
@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.input.order_id != "" };

// Only callers whose token carries role = order-agent may update orders.
@id("orders_update_by_agents")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"RefundTool___update_order", resource)
when { principal.hasTag("role") && principal.getTag("role") == "order-agent" };

// No policy names delete_order: nobody may call it.
EOF

start idp node "$INTEROP/idp.mjs"
IDP=$(wait_line idp "idp listening on ") || abort "the identity provider did not start"

# start_sidecar NAME UPSTREAM DENY_STYLE: starts a sidecar and waits until it is ready; sets
# SIDECAR_URL and SIDECAR_ADMIN. (Not in a subshell, so that its process is cleaned up.)
start_sidecar() {
    local name=$1 upstream=$2 deny_style=$3
    cat >"$WORK/$name.toml" <<EOF
[listen]
address = "127.0.0.1:0"
shutdown_grace_ms = 2000

[upstream]
url = "$upstream"
timeout_ms = 10000
connect_timeout_ms = 2000

[admin]
address = "127.0.0.1:0"

[gateway]
id = "$GATEWAY"
target = "RefundTool"

[policy]
engine = "RefundPolicyEngine"
paths = ["policies"]
deny_style = "$deny_style"

[auth]
mode = "jwt"
issuer = "$IDP"
jwks_url = "$IDP/jwks"
audiences = ["mcp-gateway"]
EOF
    start "$name" "$BIN/policy-sidecar" run --config "$WORK/$name.toml"
    SIDECAR_URL=$(wait_line "$name" "policy-sidecar listening on ") || return 1
    SIDECAR_ADMIN=$(wait_line "$name" "admin listening on ") || return 1
    wait_ready "$SIDECAR_ADMIN" || {
        echo "$name not ready:" >&2
        tail -n 20 "$WORK/$name.err" >&2
        return 1
    }
}

# Upstream answering in SSE, sidecar with JSON-RPC denials; upstream answering in JSON,
# sidecar with tool-result denials.
start demo_sse "$BIN/demo-tool-server" --listen 127.0.0.1:0
DEMO_SSE=$(wait_line demo_sse "listening on ") || abort "demo-tool-server (SSE) did not start"
start demo_json "$BIN/demo-tool-server" --listen 127.0.0.1:0 --json-response
DEMO_JSON=$(wait_line demo_json "listening on ") || abort "demo-tool-server (JSON) did not start"

start_sidecar sidecar_sse "$DEMO_SSE" jsonrpc_error \
    || abort "the sidecar in front of the SSE upstream did not start"
SIDECAR_SSE=$SIDECAR_URL ADMIN_SSE=$SIDECAR_ADMIN
start_sidecar sidecar_json "$DEMO_JSON" tool_result \
    || abort "the sidecar in front of the JSON upstream did not start"
SIDECAR_JSON=$SIDECAR_URL ADMIN_JSON=$SIDECAR_ADMIN

# --- checks -------------------------------------------------------------------------------

# run_checks NAME CMD...: runs a client with a time limit and counts its PASS/FAIL lines; a
# client that fails without a FAIL line counts as one failure.
run_checks() {
    local name=$1 status=0 before=$FAILED
    shift
    echo "== interop: $name"
    timeout --kill-after=5 300 "$@" 2>"$WORK/$name.client-err" | tee "$WORK/$name.log" \
        || status=$?
    count <"$WORK/$name.log"
    if [ "$status" -ne 0 ] && [ "$FAILED" -eq "$before" ]; then
        fail "$name: exited with status $status without a failed check; its stderr:"
        tail -n 30 "$WORK/$name.client-err"
    fi
}

cd "$ROOT"
for target in sse json; do
    if [ "$target" = sse ]; then
        url=$SIDECAR_SSE demo=${DEMO_SSE%/mcp} style=jsonrpc_error
    else
        url=$SIDECAR_JSON demo=${DEMO_JSON%/mcp} style=tool_result
    fi
    run_checks "python-$target" "$PY" "$INTEROP/python_client.py" \
        --url "$url" --idp "$IDP" --demo "$demo" --label "$target" --deny-style "$style" \
        --modes legacy,auto
    run_checks "typescript-$target" node "$INTEROP/ts_client.mjs" \
        --url "$url" --idp "$IDP" --demo "$demo" --label "$target" --deny-style "$style"
done

for admin in "$ADMIN_SSE" "$ADMIN_JSON"; do
    if curl -fsS --max-time 5 -o /dev/null "$admin/livez"; then
        printf 'PASS sidecar %s is alive after the run\n' "$admin"
        PASSED=$((PASSED + 1))
    else
        fail "sidecar $admin is alive after the run: /livez did not answer 200"
    fi
done

finish
