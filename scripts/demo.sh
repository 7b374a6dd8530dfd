#!/usr/bin/env bash
# The demo: policy-sidecar (127.0.0.1:8080, admin 9090) in front of the demo refund/order tool
# server (127.0.0.1:3000, or a free port when 3000 is taken), with the policies of
# examples/demo/policies and JWT authentication by the local demo issuer (scripts/demo-token.sh).
# Prints an MCP session: initialize, the filtered tools/list, an allowed and a denied refund and
# a call without a token; then keeps serving until Ctrl-C.
#   scripts/demo.sh          # demo, then serve until Ctrl-C
#   scripts/demo.sh --once   # demo, then stop (CI)
# Needs a Rust toolchain (cargo); installs curl, openssl, perl, jq and cvc5 (the solver of the
# policy analysis) with apt-get if missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
once=false
for arg in "$@"; do
    case "$arg" in
        --once) once=true ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 64 ;;
    esac
done

LISTEN_PORT=8080
ADMIN_PORT=9090
TOOL_PORT=3000
GATEWAY_CONFIG="$root/examples/demo/policy-sidecar.toml"

if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; green=$'\e[32m'; red=$'\e[31m'; reset=$'\e[0m'
else bold=''; dim=''; green=''; red=''; reset=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
info() { printf '   %s\n' "$*"; }
fail() { printf '%sdemo.sh: %s%s\n' "$red" "$*" "$reset" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------
command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain (https://rustup.rs)"
missing=()
for tool in curl openssl perl jq cvc5; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt-get)"
    source "$root/scripts/lib/apt.sh"
    apt_install "${missing[@]}" || fail "apt-get install ${missing[*]} failed"
fi

# --- ports --------------------------------------------------------------------------------
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$LISTEN_PORT" "$ADMIN_PORT"; do
    if in_use "$port"; then
        fail "port $port on 127.0.0.1 is in use; stop what listens there (ss -ltnp 'sport = :$port') and run the demo again"
    fi
done

# --- build --------------------------------------------------------------------------------
step "building demo-tool-server and policy-sidecar (release; the first build takes several minutes)"
source "$root/scripts/lib/processes.sh"
build_release

# --- processes ----------------------------------------------------------------------------
use_scratch mcp-policy-demo
run="$scratch"
trap 'echo; info "stopping"; exit 0' INT TERM

# Waits until FILE has a line matching PATTERN (prints it) or process PID exits.
wait_for_line() {
    local file=$1 pattern=$2 pid=$3 what=$4
    for _ in $(seq 100); do
        if grep -m1 "$pattern" "$file" 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; fail "$what exited"; }
        sleep 0.1
    done
    fail "$what did not start within 10 s"
}

step "starting the demo tool server"
tool_listen="127.0.0.1:$TOOL_PORT"
if in_use "$TOOL_PORT"; then
    info "${dim}port $TOOL_PORT is in use; the tool server takes a free port${reset}"
    tool_listen="127.0.0.1:0"
fi
"$bin/demo-tool-server" --listen "$tool_listen" >"$run/tool-server.log" 2>&1 &
pids+=($!)
line="$(wait_for_line "$run/tool-server.log" '^listening on ' "$!" "demo-tool-server")"
upstream="${line#listening on }"
info "demo-tool-server: $upstream (tools: process_refund, get_order, update_order, delete_order)"

step "starting policy-sidecar"
mkdir -p "$root/.demo-keys"
"$root/scripts/demo-token.sh" jwks >"$root/.demo-keys/jwks.json"
POLICY_SIDECAR_UPSTREAM_URL="$upstream" \
POLICY_SIDECAR_AUTH_JWKS_FILE="$root/.demo-keys/jwks.json" \
    "$bin/policy-sidecar" run --config "$GATEWAY_CONFIG" >"$run/decisions.log" 2>"$run/sidecar.log" &
sidecar_pid=$!
pids+=("$sidecar_pid")
for i in $(seq 150); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" 2>/dev/null; then break; fi
    if ! kill -0 "$sidecar_pid" 2>/dev/null; then
        cat "$run/sidecar.log" >&2
        fail "policy-sidecar exited (its log is above)"
    fi
    [ "$i" -lt 150 ] || { cat "$run/sidecar.log" >&2; fail "policy-sidecar not ready within 15 s"; }
    sleep 0.1
done
url="http://127.0.0.1:$LISTEN_PORT/mcp"
info "policy-sidecar: $url  (admin http://127.0.0.1:$ADMIN_PORT: /livez /readyz /metrics)"
info "config: examples/demo/policy-sidecar.toml, policies: examples/demo/policies/*.cedar"
info "JWKS: .demo-keys/jwks.json (scripts/demo-token.sh jwks)"

# --- the MCP session ----------------------------------------------------------------------
token="$("$root/scripts/demo-token.sh" token alice)"
session=""
protocol=""
# POSTs one JSON-RPC message to the sidecar; the answer's JSON (SSE data lines unwrapped) goes
# to stdout, the HTTP status and headers to $run/headers.
mcp() {
    local body=$1; shift
    local args=(-sS -o "$run/body" -D "$run/headers" -X POST "$url"
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' "$@")
    [ -n "$session" ] && args+=(-H "Mcp-Session-Id: $session")
    [ -n "$protocol" ] && args+=(-H "MCP-Protocol-Version: $protocol")
    curl "${args[@]}" --data "$body"
    if grep -q '^data:' "$run/body"; then sed -n 's/^data: *//p' "$run/body" | grep -v '^$' || true
    else cat "$run/body"; fi
}
status() { sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$run/headers"; }
header() { grep -i "^$1:" "$run/headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
auth=(-H "Authorization: Bearer $token")

step "token: scripts/demo-token.sh token alice  (sub alice, role refund-agent, 1 h)"
info "${dim}${token:0:60}...${reset}"

step "initialize"
reply="$(mcp '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo.sh","version":"1"}}}' "${auth[@]}")"
session="$(header Mcp-Session-Id)"
protocol="$(jq -r '.result.protocolVersion' <<<"$reply")"
[ -n "$session" ] || { echo "$reply" >&2; fail "initialize answered HTTP $(status) without a session id"; }
info "HTTP $(status), Mcp-Session-Id: $session"
info "server: $(jq -c '.result.serverInfo' <<<"$reply"), protocol $protocol"
mcp '{"jsonrpc":"2.0","method":"notifications/initialized"}' "${auth[@]}" >/dev/null

step "tools/list (filtered by policy for alice)"
reply="$(mcp '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' "${auth[@]}")"
listed="$(jq -r '[.result.tools[].name] | join(", ")' <<<"$reply")"
info "listed: ${green}$listed${reset}"
declare -A why=([process_refund]="refund_limit depends on the amount" [get_order]="orders_read depends on the order id"
    [update_order]="orders_update_admin needs role order-admin" [delete_order]="no policy")
for tool in process_refund get_order update_order delete_order; do
    if jq -e --arg t "$tool" 'any(.result.tools[]; .name == $t)' <<<"$reply" >/dev/null; then
        info "${dim}  listed $tool: ${why[$tool]}${reset}"
    else
        info "${dim}  hidden $tool: ${why[$tool]}${reset}"
    fi
done

step "tools/call process_refund amount 500  (refund_limit: amount < 1000)"
reply="$(mcp '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":500,"customer_id":"C001"}}}' "${auth[@]}")"
info "HTTP $(status): ${green}$(jq -c '.result.content[0].text | fromjson? // .' <<<"$reply")${reset}"

step "tools/call process_refund amount 2000  (no permit applies)"
reply="$(mcp '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":2000,"customer_id":"C001"}}}' "${auth[@]}")"
info "HTTP $(status): ${red}$(jq -r '.error.message // .' <<<"$reply")${reset}"
info "${dim}$reply${reset}"

step "tools/call without a token"
saved_session=$session
session=""
reply="$(mcp '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":500,"customer_id":"C001"}}}')"
session=$saved_session
info "HTTP $(status), WWW-Authenticate: $(header WWW-Authenticate)"
[ "$(status)" = 401 ] || fail "expected HTTP 401 without a token"

step "decision log (policy-sidecar stdout)"
sleep 0.2
grep '^{' "$run/decisions.log" \
    | jq -c '{kind, principal, tool, decision, determining_policies, allowed_tools, denied_tools, latency_us}
             | with_entries(select(.value != null))' \
    | sed 's/^/   /' || true

if "$once"; then
    printf '\n%sdemo ok%s\n' "$green" "$reset"
    exit 0
fi

step "serving on $url until Ctrl-C"
cat <<EOF
   Try it (the session stays valid while the demo runs):
     TOKEN=\$(scripts/demo-token.sh token alice)
     curl -s $url -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
       -H 'Mcp-Session-Id: $session' -H 'MCP-Protocol-Version: $protocol' \\
       -d '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":1500,"customer_id":"C002"}}}'
   Edit examples/demo/policies/*.cedar and the sidecar reloads them; metrics: curl http://127.0.0.1:$ADMIN_PORT/metrics
   Decision log: $run/decisions.log
EOF
while kill -0 "$sidecar_pid" 2>/dev/null; do sleep 1 & wait $! || true; done
fail "policy-sidecar exited: $(tail -5 "$run/sidecar.log")"
