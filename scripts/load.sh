#!/usr/bin/env bash
# Load measurements of policy-sidecar on loopback, all arms in one run (docs/performance.md).
# First the proxy's own cost, in front of a fast upstream (nginx answering a fixed tool result,
# one worker, its own process):
#   (a) that upstream directly,
#   (b) a plain nginx reverse-proxy hop in front of it (one worker, its own process, keepalive),
#   (c) policy-sidecar in front of it: 1,000 policies, JWT auth with a real RS256 token,
# with the CPU each proxy spends per request (read from /proc) and the ratios to the nginx hop;
# then the same arms in front of the demo tool server (a realistic, slower upstream); then the
# sidecar's resident memory, idle, with 100 and with 10,000 policies, and the binary's size; then
# (not with --quick) the in-process criterion cases the targets name.
# Every arm gets the same stateless `tools/call process_refund {amount: 500}` POST and every
# answer is checked; p50/p99 latency with 1 connection, throughput with 32 connections. Ends
# with Markdown tables.
#   scripts/load.sh                # a few seconds per measurement (LOAD_DURATION, default 5)
#   scripts/load.sh --quick        # smoke run: short durations
#   scripts/load.sh --soak N       # N seconds of mixed traffic through the sidecar; fails on any
#                                  # unexpected answer or RSS growth beyond LOAD_SOAK_MAX_GROWTH_MIB (16)
#   scripts/load.sh --fast         # only the proxy's own cost (the fast-upstream arms), for A/B runs
#   scripts/load.sh --perf FILE    # also profiles the sidecar (perf record, call graphs) during an
#                                  # extra run of its fast-upstream throughput arm; FILE: the report
#   scripts/load.sh --fast --against OTHER   # then alternating throughput rounds (LOAD_ROUNDS, 6) of
#                                  # this build and OTHER (another policy-sidecar binary) on the same
#                                  # upstream and policies: CPU per request and req/s of each, and means
# Needs a Rust toolchain; installs wrk, nginx, curl, openssl, perl and jq with apt-get if missing.
# Everything it starts runs on 127.0.0.1 on free ports and is stopped when it ends.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=false
fast_only=false
soak=0
perf_report=""
against=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=true ;;
        --soak)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
                echo "load.sh: --soak needs a number of seconds" >&2; exit 64
            fi
            soak=$2; shift ;;
        --perf)
            [ $# -ge 2 ] || { echo "load.sh: --perf needs a report file" >&2; exit 64; }
            perf_report=$2; shift ;;
        --fast) fast_only=true ;;
        --against)
            [ $# -ge 2 ] && [ -x "$2" ] || { echo "load.sh: --against needs an executable policy-sidecar" >&2; exit 64; }
            against=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "load.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
    shift
done

if "$quick"; then warm=1; duration=2; else warm=2; duration="${LOAD_DURATION:-5}"; fi
POLICIES=1000              # the sidecar arm: 1,000 policies,
POLICY_TOOLS=999           # the generated 999 on 999 distinct tools (one each)
MEMORY_SETS=(100 10000)    # idle memory with these many policies,
MEMORY_TOOLS=100           # spread over 100 generated tools
LAT_CONNS=1
TPUT_CONNS=32
WRK_THREADS=2
GATEWAY_ID="arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"
CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":500,"customer_id":"C001"}}}'

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------
command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain (https://rustup.rs)"
missing=()
for tool in wrk nginx curl openssl perl jq; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt-get)"
    # Debian starts nginx on port 80 when it is installed, unless policy-rc.d says no.
    added_policy_rc=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        added_policy_rc=true
    fi
    source "$root/scripts/lib/apt.sh"
    apt_install "${missing[@]}" \
        || { "$added_policy_rc" && rm -f /usr/sbin/policy-rc.d; fail "apt-get install ${missing[*]} failed"; }
    "$added_policy_rc" && rm -f /usr/sbin/policy-rc.d
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if [ -n "$perf_report" ] && ! command -v perf >/dev/null; then
    step "installing linux-perf (apt-get)"
    source "$root/scripts/lib/apt.sh"
    apt_install linux-perf || fail "apt-get install linux-perf failed"
fi

# --- build --------------------------------------------------------------------------------
step "building demo-tool-server and policy-sidecar (release)"
source "$root/scripts/lib/processes.sh"
build_release

# --- process handling ---------------------------------------------------------------------
use_scratch mcp-policy-load
tmp="$scratch"
trap 'exit 130' INT TERM

# Stops one process started here (TERM, then KILL after 5 s).
stop() {
    local pid=$1 rest=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || rest+=("$p"); done
    pids=("${rest[@]}")
}

free_port() {
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0", ReuseAddr => 1)->sockport'
}

# Resident memory of PID in KiB: "VmRSS VmHWM".
memory() { awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} END {print rss, hwm}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# POSTs BODY to URL with the load token; the answer on stdout.
post() {
    curl -sS -X POST "$1" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -H "Authorization: Bearer $token" --data "$2"
}

# --- upstream -----------------------------------------------------------------------------
step "starting the upstream: demo-tool-server --stateless --json-response"
"$bin/demo-tool-server" --listen 127.0.0.1:0 --stateless --json-response >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
for _ in $(seq 100); do grep -q '^listening on ' "$tmp/upstream.log" && break; sleep 0.1; done
upstream="$(sed -n 's/^listening on //p' "$tmp/upstream.log")"
[ -n "$upstream" ] || { cat "$tmp/upstream.log" >&2; fail "demo-tool-server did not start"; }
upstream_hostport="${upstream#http://}"; upstream_hostport="${upstream_hostport%%/*}"

"$root/scripts/demo-token.sh" jwks >"$tmp/jwks.json"
token_ttl=$(( soak > 0 ? soak + 3600 : 3600 ))
token="$("$root/scripts/demo-token.sh" token load-test "$token_ttl")"

answer="$(post "$upstream" "$CALL")"
grep -q 'REF-C001-500' <<<"$answer" || fail "the upstream does not answer a sessionless tools/call: $answer"
say "   $upstream answers a tools/call without a session: $(jq -c '.result.content[0].text | fromjson | {status, refund_id}' <<<"$answer")"
upstream_tools="$(post "$upstream" '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | jq -c '.result.tools')"
[ "$(jq length <<<"$upstream_tools")" -ge 1 ] || fail "the upstream's tools/list is empty"

# --- generated policy sets ----------------------------------------------------------------
# make_set P T: P policies, the demo's refund_limit plus P-1 generated ones spread round-robin
# over T generated tools (tool_00001 ..., each with process_refund's inputSchema shape), and
# the tools file (the upstream's tools plus the generated ones) they are validated and typed by.
# Each generated policy has its own id, role and amount limit.
make_set() {
    local n=$1 tools=$2 dir="$tmp/set-$1-$2"
    mkdir -p "$dir/policies"
    cp "$root/examples/demo/policies/refund.cedar" "$dir/policies/"
    awk -v n="$n" -v t="$tools" -v gw="$GATEWAY_ID" 'BEGIN {
        for (i = 1; i < n; i++) {
            printf "@id(\"generated_%05d\")\npermit(\n  principal is AgentCore::OAuthUser,\n", i
            printf "  action == AgentCore::Action::\"RefundTool___tool_%05d\",\n", (i - 1) % t + 1
            printf "  resource == AgentCore::Gateway::\"%s\"\n) when {\n", gw
            printf "  principal.hasTag(\"role\") && principal.getTag(\"role\") == \"role-%d\" &&\n", i % 50
            printf "  context.input.amount.lessThan(decimal(\"%d.0\"))\n};\n\n", 100 + i
        }
    }' >"$dir/policies/generated.cedar"
    jq -c --argjson t "$tools" '{tools: (. + [range(1; $t + 1) | {
            name: ("tool_" + ("0000" + tostring)[-5:]),
            description: "generated tool",
            inputSchema: {type: "object",
                          properties: {amount: {type: "number"}, customer_id: {type: "string"}},
                          required: ["amount", "customer_id"]}}])}' <<<"$upstream_tools" >"$dir/tools.json"
}

# start_sidecar P T: a sidecar on set P-T; sets sidecar_pid, sidecar_url, sidecar_admin.
start_sidecar() {
    local n=$1 dir="$tmp/set-$1-$2" port admin
    port="$(free_port)"; admin="$(free_port)"
    cat >"$dir/policy-sidecar.toml" <<EOF
[listen]
address = "127.0.0.1:$port"
[upstream]
url = "$upstream"
[admin]
address = "127.0.0.1:$admin"
[gateway]
id = "$GATEWAY_ID"
target = "RefundTool"
[policy]
engine = "LoadPolicyEngine"
paths = ["policies"]
schema = "tools.json"
validation = "${SIDECAR_VALIDATION:-FAIL_ON_ANY_FINDINGS}"
# The request path is measured here, not the semantic analysis at load (which, with cvc5,
# takes minutes for 10,000 policies; README, "Policies"): only the checks that need no solver.
solver = "none"
[auth]
mode = "jwt"
issuer = "https://issuer.mcp-policy.example"
jwks_file = "$tmp/jwks.json"
audiences = ["mcp-gateway"]
[log]
decisions = true
EOF
    # The decision log (stdout) is written, as in production, and thrown away.
    "${SIDECAR_BIN:-$bin/policy-sidecar}" run --config "$dir/policy-sidecar.toml" >/dev/null 2>"$dir/sidecar.log" &
    sidecar_pid=$!
    pids+=("$sidecar_pid")
    sidecar_url="http://127.0.0.1:$port/mcp"
    sidecar_admin="http://127.0.0.1:$admin"
    local started
    started=$(date +%s%N)
    until curl -fsS -o /dev/null "$sidecar_admin/readyz" 2>/dev/null; do
        kill -0 "$sidecar_pid" 2>/dev/null || { cat "$dir/sidecar.log" >&2; fail "policy-sidecar ($n policies) exited"; }
        [ $(($(date +%s%N) - started)) -lt 300000000000 ] || fail "policy-sidecar ($n policies) not ready within 300 s"
        sleep 0.05
    done
    sidecar_ready_s=$(awk -v ns=$(($(date +%s%N) - started)) 'BEGIN {printf "%.1f", ns / 1e9}')
}

# --- wrk ----------------------------------------------------------------------------------
# Runs wrk against URL; the raw output goes to $tmp/wrk-NAME.txt. Environment: LOAD_* of
# scripts/load/request.lua. Prints nothing.
wrk_run() {
    local name=$1 conns=$2 threads=$3 secs=$4 url=$5
    LOAD_BODY="${LOAD_BODY:-$CALL}" LOAD_EXPECT="${LOAD_EXPECT-REF-C001-500}" LOAD_TOKEN="$token" \
        wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency \
        -s "$root/scripts/load/request.lua" "$url" >"$tmp/wrk-$name.txt" 2>&1 \
        || { cat "$tmp/wrk-$name.txt" >&2; fail "wrk $name failed"; }
}
# Reads "rps p50_us p99_us requests unexpected socket_errors" from a wrk output file.
wrk_parse() {
    awk '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /m$/) return v * 60e6
            if (v ~ /s$/) return v * 1e6
            return v
        }
        /^ +50%/ {p50 = us($2)}
        /^ +99%/ {p99 = us($2)}
        /^Requests\/sec:/ {rps = $2}
        / requests in / {n = $1}
        /^checked / {bad = $4}
        /Socket errors:/ {gsub(",", ""); errs = $4 + $6 + $8 + $10}
        END {printf "%.0f %.0f %.0f %d %d %d\n", rps, p50, p99, n, bad, errs}
    ' "$tmp/wrk-$1.txt"
}

# =========================================================================================
if [ "$soak" -gt 0 ]; then
    step "soak: $soak s of mixed traffic through policy-sidecar ($POLICIES policies)"
    make_set "$POLICIES" "$POLICY_TOOLS"
    start_sidecar "$POLICIES" "$POLICY_TOOLS"
    say "   policy-sidecar $sidecar_url (ready after ${sidecar_ready_s} s)"
    # kind|body|status|expected text|rejected text; each kind: its own wrk, 1 thread, 2 connections.
    kinds=(
        "allowed|$CALL|200|REF-C001-500|"
        "denied|${CALL/\"amount\":500/\"amount\":2000}|200|Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]|REF-C001"
        "list|{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\"}|200|\"process_refund\"|\"delete_order\""
        "malformed|{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":|400|-32700|"
    )
    for entry in "${kinds[@]}"; do
        IFS='|' read -r kind body expect_status expect reject <<<"$entry"
        answer="$(post "$sidecar_url" "$body")"
        grep -qF -- "$expect" <<<"$answer" || fail "$kind: the sidecar answered $answer"
    done
    read -r rss0 _ < <(memory "$sidecar_pid")
    say "   RSS before traffic: $(mib "$rss0") MiB"
    wrk_pids=()
    for entry in "${kinds[@]}"; do
        IFS='|' read -r kind body expect_status expect reject <<<"$entry"
        LOAD_BODY="$body" LOAD_STATUS="$expect_status" LOAD_EXPECT="$expect" LOAD_REJECT="$reject" \
            wrk_run "soak-$kind" 2 1 "$soak" "$sidecar_url" &
        wrk_pids+=($!)
        pids+=($!)
    done
    interval=$(( soak >= 30 ? 5 : 2 ))
    samples=()
    started=$SECONDS
    while [ $((SECONDS - started)) -lt "$soak" ]; do
        sleep "$interval"
        kill -0 "$sidecar_pid" 2>/dev/null || fail "policy-sidecar died during the soak: $(tail -5 "$tmp/set-$POLICIES-$POLICY_TOOLS/sidecar.log")"
        read -r rss hwm < <(memory "$sidecar_pid")
        samples+=("$rss")
        printf '   %4d s  RSS %6s MiB  HWM %6s MiB\n' $((SECONDS - started)) "$(mib "$rss")" "$(mib "$hwm")"
    done
    for pid in "${wrk_pids[@]}"; do wait "$pid" || fail "a soak wrk failed"; done
    read -r rss_end hwm_end < <(memory "$sidecar_pid")
    errors=0
    total=0
    step "soak results"
    for entry in "${kinds[@]}"; do
        IFS='|' read -r kind _ <<<"$entry"
        read -r rps _ _ n errs sock < <(wrk_parse "soak-$kind")
        total=$((total + n))
        errors=$((errors + errs + sock))
        printf '   %-10s %8d requests  %7s req/s  unexpected %d  socket errors %d\n' "$kind" "$n" "$rps" "$errs" "$sock"
        grep -h '^first unexpected' "$tmp/wrk-soak-$kind.txt" | sed 's/^/      /' || true
    done
    baseline=${samples[0]:-$rss0}
    growth=$(( rss_end - baseline ))
    max_growth_mib="${LOAD_SOAK_MAX_GROWTH_MIB:-16}"
    say "   RSS: before traffic $(mib "$rss0") MiB, first sample $(mib "$baseline") MiB, end $(mib "$rss_end") MiB (growth $(mib "$growth") MiB, bound $max_growth_mib MiB); HWM $(mib "$hwm_end") MiB"
    say "   $total requests, $errors unexpected answers or socket errors"
    decisions="$(curl -fsS "$sidecar_admin/metrics" | grep '^mcp_policy_decisions_total' | sed 's/^/      /' || true)"
    if [ -n "$decisions" ]; then say "   decisions (metrics):"; say "$decisions"; fi
    [ "$errors" -eq 0 ] || fail "soak: $errors unexpected answers"
    [ "$growth" -le $((max_growth_mib * 1024)) ] || fail "soak: RSS grew by $(mib "$growth") MiB (bound $max_growth_mib MiB)"
    say "soak ok"
    exit 0
fi

# CPU seconds (user + system) spent so far by the processes given, from /proc (clock ticks).
cpu_seconds() {
    local pid ticks=0 tck
    tck=$(getconf CLK_TCK)
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    awk -v t="$ticks" -v h="$tck" 'BEGIN {printf "%.3f", t / h}'
}

# start_nginx NAME HTTP_BLOCK SERVER_BLOCK: an nginx with one worker, in its own process, on a
# free port; sets nginx_started_pid and nginx_started_port.
start_nginx() {
    local name=$1 http_block=$2 server_block=$3 dir="$tmp/nginx-$1" port
    port="$(free_port)"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
$http_block
    server {
        listen 127.0.0.1:$port;
$server_block
    }
}
EOF
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
    nginx_started_pid=$!
    nginx_started_port=$port
    pids+=("$nginx_started_pid")
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
}

# --- the proxy's own cost -----------------------------------------------------------------
step "the proxy's own cost: in front of nginx answering a fixed tool result (one worker)"
FAST_RESULT='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"REF-C001-500"}],"isError":false}}'
start_nginx fast "" "        location = /mcp {
            default_type application/json;
            return 200 '$FAST_RESULT';
        }"
fast_port=$nginx_started_port
fast_upstream="http://127.0.0.1:$fast_port/mcp"
start_nginx hop "    upstream fast_upstream { server 127.0.0.1:$fast_port; keepalive 64; }" \
    "        location / {
            proxy_pass http://fast_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }"
hop_pid=$nginx_started_pid
hop_url="http://127.0.0.1:$nginx_started_port/mcp"
for probe in "$fast_upstream" "$hop_url"; do
    answer="$(post "$probe" "$CALL")"
    grep -q 'REF-C001-500' <<<"$answer" || { cat "$tmp"/nginx-*/error.log >&2; fail "$probe: $answer"; }
done
make_set "$POLICIES" "$POLICY_TOOLS"
real_upstream="$upstream"
upstream="$fast_upstream"
start_sidecar "$POLICIES" "$POLICY_TOOLS"
upstream="$real_upstream"
fast_sidecar_pid=$sidecar_pid
answer="$(post "$sidecar_url" "$CALL")"
grep -q 'REF-C001-500' <<<"$answer" || fail "policy-sidecar in front of the fixed reply: $answer"
say "   upstream $fast_upstream; nginx hop $hop_url; policy-sidecar $sidecar_url ($POLICIES policies, JWT)"
declare -A fast_url=([direct]="$fast_upstream" [hop]="$hop_url" [sidecar]="$sidecar_url")
declare -A f_p50 f_p99 f_tput f_cpu f_bad
for arm in direct hop sidecar; do wrk_run "fast-warm-$arm" 8 "$WRK_THREADS" "$warm" "${fast_url[$arm]}"; done
for arm in direct hop sidecar; do
    wrk_run "fast-lat-$arm" "$LAT_CONNS" 1 "$duration" "${fast_url[$arm]}"
    read -r rps p50 p99 n errs sock < <(wrk_parse "fast-lat-$arm")
    f_p50[$arm]=$p50; f_p99[$arm]=$p99; f_bad[$arm]=$((errs + sock))
    printf '   %-8s %2d conn: p50 %5s us  p99 %5s us  %7s req/s\n' "$arm" "$LAT_CONNS" "$p50" "$p99" "$rps"
done
for arm in direct hop sidecar; do
    case $arm in
        hop) procs="$hop_pid $(pgrep -P "$hop_pid" | tr '\n' ' ')" ;;
        sidecar) procs="$fast_sidecar_pid" ;;
        *) procs="" ;;
    esac
    # shellcheck disable=SC2086 # a list of pids
    before=$(cpu_seconds $procs)
    wrk_run "fast-tput-$arm" "$TPUT_CONNS" "$WRK_THREADS" "$duration" "${fast_url[$arm]}"
    # shellcheck disable=SC2086
    after=$(cpu_seconds $procs)
    read -r rps p50 p99 n errs sock < <(wrk_parse "fast-tput-$arm")
    f_tput[$arm]=$rps; f_bad[$arm]=$((f_bad[$arm] + errs + sock))
    f_cpu[$arm]=$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {if (n > 0) printf "%.1f", 1e6 * (b - a) / n; else print 0}')
    printf '   %-8s %2d conn: %7s req/s  CPU per request %5s us  (%d requests, unexpected %d)\n' \
        "$arm" "$TPUT_CONNS" "$rps" "${f_cpu[$arm]}" "$n" "$((errs + sock))"
done
if [ -n "$perf_report" ]; then
    # A separate run, so that the profiler's own cost is in none of the figures above.
    perf record -q -F 999 --call-graph dwarf,16384 -p "$fast_sidecar_pid" -o "$perf_report.data" \
        -- sleep "$duration" >/dev/null 2>&1 &
    perf_pid=$!
    wrk_run "fast-perf" "$TPUT_CONNS" "$WRK_THREADS" "$duration" "$sidecar_url"
    wait "$perf_pid" || true
    {
        printf '# perf record of policy-sidecar, %s connections, %s s, load average %s\n\n' \
            "$TPUT_CONNS" "$duration" "$(cut -d' ' -f1-3 /proc/loadavg)"
        echo '## self time by place (user and kernel)'
        perf report -i "$perf_report.data" --no-children --sort dso,sym --percent-limit 0.7 --stdio -g none 2>/dev/null | grep -v '^$' || true
        echo
        echo '## by object (user code, kernel, libc)'
        perf report -i "$perf_report.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' || true
        echo
        echo '## inclusive time of the steps (server and client connections, the layer, deciding, Cedar)'
        perf report -i "$perf_report.data" --children --sort sym --percent-limit 1 --stdio -g none 2>/dev/null \
            | grep -E 'dispatch::(Server|Client)|PolicyService<S> as|policy_layer::decide::decide$|authorize_json_at|Authorizer::is_authorized|jsonrpc::parse|filter::rewrite|Observer as|Upstream as' \
            | cut -c1-160 || true
    } >"$perf_report"
    say "   perf profile of the sidecar: $perf_report"
fi
if [ -n "$against" ]; then
    # A change is judged by alternating runs: this machine's figures move by 15 to 25 % from one
    # run to the next, much less between two runs a few seconds apart.
    step "alternating rounds: this build against $against"
    this_url=$sidecar_url
    upstream="$fast_upstream" SIDECAR_BIN="$against" start_sidecar "$POLICIES" "$POLICY_TOOLS"
    against_pid=$sidecar_pid
    declare -A ab_url=([this]="$this_url" [other]="$sidecar_url")
    declare -A ab_pid=([this]="$fast_sidecar_pid" [other]="$against_pid")
    declare -A ab_cpu_sum=([this]=0 [other]=0) ab_rps_sum=([this]=0 [other]=0)
    answer="$(post "${ab_url[other]}" "$CALL")"
    grep -q 'REF-C001-500' <<<"$answer" || fail "$against in front of the fixed reply: $answer"
    wrk_run "ab-warm-other" 8 "$WRK_THREADS" "$warm" "${ab_url[other]}"
    rounds="${LOAD_ROUNDS:-6}"
    for round in $(seq "$rounds"); do
        for arm in this other; do
            before=$(cpu_seconds "${ab_pid[$arm]}")
            wrk_run "ab-$arm" "$TPUT_CONNS" "$WRK_THREADS" "$duration" "${ab_url[$arm]}"
            after=$(cpu_seconds "${ab_pid[$arm]}")
            read -r rps _ _ n errs sock < <(wrk_parse "ab-$arm")
            [ $((errs + sock)) -eq 0 ] || fail "round $round, $arm: $((errs + sock)) unexpected answers or socket errors"
            cpu=$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {printf "%.1f", (n > 0) ? 1e6 * (b - a) / n : 0}')
            ab_cpu_sum[$arm]=$(awk -v s="${ab_cpu_sum[$arm]}" -v c="$cpu" 'BEGIN {print s + c}')
            ab_rps_sum[$arm]=$(awk -v s="${ab_rps_sum[$arm]}" -v r="$rps" 'BEGIN {print s + r}')
            printf '   round %d  %-5s %7s req/s  CPU per request %5s us  (load average %s)\n' \
                "$round" "$arm" "$rps" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
        done
    done
    awk -v tc="${ab_cpu_sum[this]}" -v oc="${ab_cpu_sum[other]}" -v tr="${ab_rps_sum[this]}" \
        -v or="${ab_rps_sum[other]}" -v n="$rounds" 'BEGIN {
            printf "\n   means over %d rounds: this build %.1f us CPU per request, %.0f req/s; the other %.1f us, %.0f req/s (this / other: CPU %.2fx, req/s %.2fx)\n",
                n, tc / n, tr / n, oc / n, or / n, tc / oc, tr / or
        }'
    stop "$against_pid"
fi
stop "$fast_sidecar_pid"
if "$fast_only"; then
    awk -v sc="${f_cpu[sidecar]}" -v hc="${f_cpu[hop]}" -v st="${f_tput[sidecar]}" -v ht="${f_tput[hop]}" \
        -v s50="${f_p50[sidecar]}" -v d50="${f_p50[direct]}" -v s99="${f_p99[sidecar]}" -v d99="${f_p99[direct]}" \
        -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
            printf "\n   CPU per request %.2fx the nginx hop, throughput %.0f %%, added p50 %+d us, p99 %+d us (load average %s)\n",
                sc / hc, 100 * st / ht, s50 - d50, s99 - d99, load
        }'
    unexpected=$((f_bad[direct] + f_bad[hop] + f_bad[sidecar]))
    [ "$unexpected" -eq 0 ] || fail "$unexpected unexpected answers or socket errors"
    exit 0
fi

# --- nginx --------------------------------------------------------------------------------
step "starting nginx as a plain reverse-proxy hop"
nginx_port="$(free_port)"
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    upstream tool_server {
        server $upstream_hostport;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        # Reference only: nginx answering by itself, the floor of a loopback round trip here.
        location = /static {
            default_type application/json;
            return 200 '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"REF-C001-500"}]}}';
        }
        location / {
            proxy_pass http://tool_server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $upstream_hostport;
        }
    }
}
EOF
"$NGINX" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")
nginx_url="http://127.0.0.1:$nginx_port${upstream#http://"$upstream_hostport"}"
for _ in $(seq 50); do curl -s -o /dev/null "$nginx_url" 2>/dev/null && break; sleep 0.1; done
answer="$(post "$nginx_url" "$CALL")"
grep -q 'REF-C001-500' <<<"$answer" || { cat "$tmp/nginx/error.log" >&2; fail "nginx hop: $answer"; }
say "   nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') on $nginx_url -> $upstream"

# --- sidecar ------------------------------------------------------------------------------
step "starting policy-sidecar with $POLICIES policies"
make_set "$POLICIES" "$POLICY_TOOLS"
start_sidecar "$POLICIES" "$POLICY_TOOLS"
answer="$(post "$sidecar_url" "$CALL")"
grep -q 'REF-C001-500' <<<"$answer" || fail "sidecar: $answer"
denied="$(post "$sidecar_url" "${CALL/\"amount\":500/\"amount\":2000}")"
grep -q 'Tool Execution Denied' <<<"$denied" || fail "sidecar did not deny a refund of 2000: $denied"
read -r rss_idle _ < <(memory "$sidecar_pid")
ready_main=$sidecar_ready_s
say "   policy-sidecar on $sidecar_url -> $upstream (ready after ${sidecar_ready_s} s, RSS $(mib "$rss_idle") MiB)"
say "   allowed: $(jq -c '.result.content[0].text | fromjson | .status' <<<"$answer"), refund of 2000: $(jq -r '.error.message' <<<"$denied")"

# --- measurements -------------------------------------------------------------------------
# The three arms, then two references: nginx answering a fixed reply by itself (the floor of a
# loopback round trip with this load tool), and the sidecar denying a refund of 2000 (answered
# by the sidecar alone: the cost of the policy path without the upstream).
arms=(direct nginx sidecar static deny)
declare -A url=([direct]="$upstream" [nginx]="$nginx_url" [sidecar]="$sidecar_url"
    [static]="http://127.0.0.1:$nginx_port/static" [deny]="$sidecar_url")
DENY_CALL="${CALL/\"amount\":500/\"amount\":2000}"
declare -A body=([deny]="$DENY_CALL")
declare -A expect=([deny]="Tool Execution Denied")
declare -A lat_p50 lat_p99 tput bad
declare -A label=([direct]="upstream directly" [nginx]="nginx hop" [sidecar]="policy-sidecar ($POLICIES policies, JWT)"
    [static]="reference: nginx fixed reply, no upstream" [deny]="reference: sidecar denies (amount 2000), no upstream")
step "measuring: ${warm} s warm-up, ${duration} s with $LAT_CONNS connection, ${duration} s with $TPUT_CONNS connections, per arm"
say "   wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), request: POST tools/call process_refund {amount: 500} with a bearer token"
# wrk_arm NAME ARM CONNS THREADS SECS: wrk_run with the arm's request and expectation.
wrk_arm() {
    LOAD_BODY="${body[$2]:-$CALL}" LOAD_EXPECT="${expect[$2]:-REF-C001-500}" wrk_run "$1" "$3" "$4" "$5" "${url[$2]}"
}
for arm in "${arms[@]}"; do wrk_arm "warm-$arm" "$arm" 8 "$WRK_THREADS" "$warm"; done
for arm in "${arms[@]}"; do
    wrk_arm "lat-$arm" "$arm" "$LAT_CONNS" 1 "$duration"
    read -r rps p50 p99 n errs sock < <(wrk_parse "lat-$arm")
    printf '   %-8s %2d conn: p50 %5s us  p99 %5s us  %7s req/s  (%d requests, unexpected %d)\n' \
        "$arm" "$LAT_CONNS" "$p50" "$p99" "$rps" "$n" "$((errs + sock))"
    lat_p50[$arm]=$p50; lat_p99[$arm]=$p99; bad[$arm]=$((errs + sock))
done
for arm in "${arms[@]}"; do
    wrk_arm "tput-$arm" "$arm" "$TPUT_CONNS" "$WRK_THREADS" "$duration"
    read -r rps p50 p99 n errs sock < <(wrk_parse "tput-$arm")
    printf '   %-8s %2d conn: %7s req/s  p50 %5s us  p99 %5s us  (%d requests, unexpected %d)\n' \
        "$arm" "$TPUT_CONNS" "$rps" "$p50" "$p99" "$n" "$((errs + sock))"
    tput[$arm]=$rps; bad[$arm]=$((bad[$arm] + errs + sock))
done
read -r rss_after hwm_after < <(memory "$sidecar_pid")
stop "$sidecar_pid"

# --- memory -------------------------------------------------------------------------------
declare -A mem_rss mem_hwm mem_ready
for n in "${MEMORY_SETS[@]}"; do
    step "memory: policy-sidecar with $n policies on $MEMORY_TOOLS generated tools, idle"
    make_set "$n" "$MEMORY_TOOLS"
    # Start and memory as the targets state them: schema from a tools file, IGNORE_ALL_FINDINGS.
    SIDECAR_VALIDATION=IGNORE_ALL_FINDINGS start_sidecar "$n" "$MEMORY_TOOLS"
    sleep 1
    read -r rss hwm < <(memory "$sidecar_pid")
    mem_rss[$n]=$rss; mem_hwm[$n]=$hwm; mem_ready[$n]=$sidecar_ready_s
    say "   ready after ${sidecar_ready_s} s: VmRSS $(mib "$rss") MiB, VmHWM $(mib "$hwm") MiB"
    stop "$sidecar_pid"
done

# --- in process (criterion) -----------------------------------------------------------------
# The in-process targets: the medians of the criterion cases they name (not with --quick: the
# bench builds engines of up to 10,000 policies first, a few minutes).
declare -A crit
CRITERION_CASES=(
    "layer_tools_call/allow/1"
    "layer_tools_call/allow/10000"
    "engine_authorize/1"
    "engine_partially_authorize/1000_tools_100_policies"
    "engine_partially_authorize/1000_tools_100_policies_group_permit"
)
if ! "$quick"; then
    step "in process: criterion (cargo bench -p policy-layer --bench layer, the cases the targets name)"
    touch "$tmp/criterion.start"
    (cd "$root" && cargo bench -q -p policy-layer --bench layer -- --warm-up-time 1 --measurement-time 3 \
        'layer/tools_call/allow/(1|10000)$|engine/authorize/1$|engine/partially_authorize/1000_tools_100_policies(_group_permit)?$') \
        >"$tmp/criterion.txt" 2>&1 || { tail -20 "$tmp/criterion.txt" >&2; fail "cargo bench failed"; }
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
    for case in "${CRITERION_CASES[@]}"; do
        estimates="$target_dir/criterion/$case/new/estimates.json"
        # Only this run's figures: a case the filter missed would leave an older file.
        [ "$estimates" -nt "$tmp/criterion.start" ] || fail "criterion did not measure $case"
        crit[$case]=$(jq -r '.median.point_estimate / 100 | round / 10' "$estimates")
        say "   $case: ${crit[$case]} us (median)"
    done
fi

# --- report -------------------------------------------------------------------------------
unexpected=0
for arm in "${arms[@]}"; do unexpected=$((unexpected + bad[$arm])); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.0f %%", 100 * a / b; else print "n/a"}'; }
diff_us() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+d us", a - b}'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == "<=") ? v <= t : v >= t; print ok ? "met" : "missed"}'; }
tput_pct=$(awk -v a="${tput[sidecar]}" -v b="${tput[nginx]}" 'BEGIN {printf "%.0f", (b > 0) ? 100 * a / b : 0}')
add50=$((lat_p50[sidecar] - lat_p50[direct])); add99=$((lat_p99[sidecar] - lat_p99[direct]))

step "results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
for arm in direct hop sidecar; do unexpected=$((unexpected + f_bad[$arm])); done
cpu_ratio=$(awk -v a="${f_cpu[sidecar]}" -v b="${f_cpu[hop]}" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
fast_pct=$(awk -v a="${f_tput[sidecar]}" -v b="${f_tput[hop]}" 'BEGIN {printf "%.0f", (b > 0) ? 100 * a / b : 0}')
fadd50=$((f_p50[sidecar] - f_p50[direct])); fadd99=$((f_p99[sidecar] - f_p99[direct]))
binary_mib=$(mib "$(($(stat -c %s "$bin/policy-sidecar") / 1024))")
cat <<EOF

The proxy's own cost, in front of nginx answering a fixed tool result (one worker):

| Arm | p50, 1 conn | p99, 1 conn | req/s, 32 conn | CPU per request |
|---|---|---|---|---|
| upstream directly | ${f_p50[direct]} us | ${f_p99[direct]} us | ${f_tput[direct]} | |
| nginx hop (1 worker, own process) | ${f_p50[hop]} us | ${f_p99[hop]} us | ${f_tput[hop]} | ${f_cpu[hop]} us |
| policy-sidecar ($POLICIES policies, RS256 JWT) | ${f_p50[sidecar]} us | ${f_p99[sidecar]} us | ${f_tput[sidecar]} | ${f_cpu[sidecar]} us |

| Target | Measured | Target | |
|---|---|---|---|
| CPU per request, sidecar / nginx hop | ${cpu_ratio}x | <= 1.5x | $(verdict "$cpu_ratio" "<=" 1.5) |
| throughput at 32 connections, sidecar / nginx hop | ${fast_pct} % | >= 100 % | $(verdict "$fast_pct" ">=" 100) |
| added latency over direct, p50 / p99 | $(diff_us "${f_p50[sidecar]}" "${f_p50[direct]}") / $(diff_us "${f_p99[sidecar]}" "${f_p99[direct]}") | <= 40 us / <= 100 us | $(verdict "$fadd50" "<=" 40) / $(verdict "$fadd99" "<=" 100) |
| resident memory idle, 100 / 10,000 policies on $MEMORY_TOOLS tools | $(mib "${mem_rss[100]}") / $(mib "${mem_rss[10000]}") MiB (peak $(mib "${mem_hwm[100]}") / $(mib "${mem_hwm[10000]}")) | <= 15 / <= 64 MiB | $(verdict "$(mib "${mem_rss[100]}")" "<=" 15) / $(verdict "$(mib "${mem_rss[10000]}")" "<=" 64) |
| start of 10,000 policies to ready | ${mem_ready[10000]} s | <= 3 s | $(verdict "${mem_ready[10000]}" "<=" 3) |
| policy-sidecar binary on disk | ${binary_mib} MiB | | |

EOF
if ! "$quick"; then
    cat <<EOF

In process (criterion medians, \`cargo bench -p policy-layer --bench layer\`):

| Case | Measured | Target | |
|---|---|---|---|
| one tools/call through PolicyService, 1 policy | ${crit[layer_tools_call/allow/1]} us | <= 5 us | $(verdict "${crit[layer_tools_call/allow/1]}" "<=" 5) |
| the same, 10,000 policies | ${crit[layer_tools_call/allow/10000]} us | <= 6 us | $(verdict "${crit[layer_tools_call/allow/10000]}" "<=" 6) |
| AuthorizeAction alone (engine/authorize), 1 policy | ${crit[engine_authorize/1]} us | | |
| tools/list of 1,000 tools under 100 policies, a group permit needing the input | ${crit[engine_partially_authorize/1000_tools_100_policies_group_permit]} us | <= 1000 us | $(verdict "${crit[engine_partially_authorize/1000_tools_100_policies_group_permit]}" "<=" 1000) |
| the same list answered from the per-tool index | ${crit[engine_partially_authorize/1000_tools_100_policies]} us | | |
EOF
fi
cat <<EOF

In front of the demo tool server (a realistic upstream, about 9,000 requests/s here):
EOF
cat <<EOF

| Arm | p50, 1 conn | p99, 1 conn | req/s, 32 conn | vs direct | vs nginx |
|---|---|---|---|---|---|
| (a) ${label[direct]} | ${lat_p50[direct]} us | ${lat_p99[direct]} us | ${tput[direct]} | 100 % | $(ratio "${tput[direct]}" "${tput[nginx]}") |
| (b) ${label[nginx]} | ${lat_p50[nginx]} us | ${lat_p99[nginx]} us | ${tput[nginx]} | $(ratio "${tput[nginx]}" "${tput[direct]}") | 100 % |
| (c) ${label[sidecar]} | ${lat_p50[sidecar]} us | ${lat_p99[sidecar]} us | ${tput[sidecar]} | $(ratio "${tput[sidecar]}" "${tput[direct]}") | $(ratio "${tput[sidecar]}" "${tput[nginx]}") |
| ${label[static]} | ${lat_p50[static]} us | ${lat_p99[static]} us | ${tput[static]} | | |
| ${label[deny]} | ${lat_p50[deny]} us | ${lat_p99[deny]} us | ${tput[deny]} | | |

| Measure | Measured | |
|---|---|---|
| sidecar added latency vs direct, p50 / p99 | $(diff_us "${lat_p50[sidecar]}" "${lat_p50[direct]}") / $(diff_us "${lat_p99[sidecar]}" "${lat_p99[direct]}") | |
| nginx hop added latency vs direct, p50 / p99 | $(diff_us "${lat_p50[nginx]}" "${lat_p50[direct]}") / $(diff_us "${lat_p99[nginx]}" "${lat_p99[direct]}") | (reference) |
| sidecar added latency vs nginx hop, p50 / p99 | $(diff_us "${lat_p50[sidecar]}" "${lat_p50[nginx]}") / $(diff_us "${lat_p99[sidecar]}" "${lat_p99[nginx]}") | |
| sidecar throughput vs nginx hop, 32 conn | ${tput_pct} % | |
| sidecar RSS, $POLICIES policies on $((POLICY_TOOLS + 1)) tools: idle / after the load (VmHWM; ready after) | $(mib "$rss_idle") / $(mib "$rss_after") MiB ($(mib "$hwm_after")); ${ready_main} s | |

Unexpected answers or socket errors over all runs: $unexpected. Durations: ${duration} s per measurement after ${warm} s warm-up; wrk with $LAT_CONNS connection (1 thread) and $TPUT_CONNS connections ($WRK_THREADS threads); everything on one machine.
EOF
[ "$unexpected" -eq 0 ] || fail "$unexpected unexpected answers (see above)"
