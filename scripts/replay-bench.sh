#!/usr/bin/env bash
# How long `policy-sidecar replay` takes over a day of traffic (docs/replay.md): writes a
# recording of LINES (default 1,000,000) synthetic lines for the worked example's gateway
# (examples/policies: 9 policies over 7 tools, 3 of them time-based), then replays it under
# the example's policies with the release binary and prints the wall time.
#   scripts/replay-bench.sh              # 1,000,000 lines
#   scripts/replay-bench.sh 100000       # fewer
# The traffic is made to defeat the decision reuse: 1,000 callers in 4 roles, amounts and
# order ids drawn from 10,000 values each, times spread over a day (the time-based tools are
# decided anew on every line), 2% tools/list lines. Near the worst case for replay; real
# traffic repeats itself more. Needs python3. Do not trust the figure while other builds run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lines="${1:-1000000}"
if ! [[ "$lines" =~ ^[1-9][0-9]*$ ]]; then
    echo "replay-bench.sh: the number of lines must be a positive integer" >&2
    exit 64
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet -p policy-sidecar --manifest-path "$root/Cargo.toml"
target="${CARGO_TARGET_DIR:-$root/target}"
sidecar="$target/release/policy-sidecar"

python3 - "$lines" "$work/recording.jsonl" <<'PY'
import json, random, sys
count, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(2026)
roles = ["refund-agent", "viewer", "admin", "support"]
users = [(f"user-{i}", roles[i % len(roles)]) for i in range(1000)]
base = 1736899200  # 2025-01-15T00:00:00Z
calls = [
    ("process_refund", lambda: {"amount": rng.randrange(-100, 9900) / 10, "customer_id": f"C{rng.randrange(10000)}"}),
    ("get_order", lambda: {"order_id": f"ORD-{rng.randrange(10000)}"}),
    ("update_order", lambda: {"order_id": f"ORD-{rng.randrange(10000)}", "status": rng.choice(["open", "shipped"])}),
    ("delete_order", lambda: {"order_id": f"ORD-{rng.randrange(10000)}"}),
    ("calculate_premium", lambda: {"age": rng.randrange(18, 90), "coverage": rng.randrange(1000, 100000)}),
    ("disburse_payment", lambda: {"claim_id": f"CLM-{rng.randrange(10000)}", "amount": rng.randrange(1, 5000)}),
    ("apply_discount", lambda: {"order_id": f"ORD-{rng.randrange(10000)}", "percent": rng.randrange(1, 50)}),
]
tools = [name for name, _ in calls]
with open(path, "w") as out:
    for n in range(count):
        sub, role = rng.choice(users)
        secs = base + n * 86400 // count
        time = "%sT%02d:%02d:%02d.000Z" % ("2025-01-15", secs // 3600 % 24, secs // 60 % 60, secs % 60)
        head = {"time": time, "trace_id": "", "engine": "RefundPolicyEngine",
                "principal": f'AgentCore::OAuthUser::"{sub}"',
                "identity": {"kind": "OAuthUser", "sub": sub, "tags": {"role": role}}}
        if n % 50 == 0:
            line = dict(head, kind="tools/list", allowed_tools=tools[:4], denied_tools=tools[4:])
        else:
            tool, arguments = rng.choice(calls)
            line = dict(head, kind="tools/call", tool=tool, request_id=n,
                        decision=rng.choice(["ALLOW", "DENY"]), determining_policies=[],
                        arguments=arguments())
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
PY

size="$(du -h "$work/recording.jsonl" | cut -f1)"
echo "recording: $lines lines, $size"
start="$(date +%s%N)"
POLICY_SIDECAR_POLICY_SOLVER=none "$sidecar" replay \
    --config "$root/examples/policies/policy-sidecar.toml" \
    --policies "$root/examples/policies/policies" \
    --allow-flips "$work/recording.jsonl" > "$work/report.txt"
end="$(date +%s%N)"
head -n 3 "$work/report.txt"
echo "replay of $lines lines: $(( (end - start) / 1000000 )) ms (wall, release build, semantic analysis off)"
