#!/usr/bin/env bash
# The differential test of the temporal policy engine against Dogwood's reference interpreter
# (docs/temporal.md, "The differential test").
#
#   scripts/difftest.sh            check: the committed vectors and the reference's decisions are
#                                  what the generator and the reference produce today, and
#                                  policy-layer decides every vector as the reference does
#   scripts/difftest.sh --update   rewrite difftest/vectors/{generated,oracle}.json first
#
# The reference (`dogwood-language`, in difftest/ with its own lockfile and target directory)
# pins another Cedar than the workspace, so the two sides meet through JSON files.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=2026
count=400
vectors=difftest/vectors
documented=policy-layer/src/temporal/testdata/documented.json
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== build the reference side (difftest/, own lockfile)"
# Its own target directory: a CARGO_TARGET_DIR shared with the workspace would mix two Cedars.
start=$(date +%s)
CARGO_TARGET_DIR=difftest/target cargo build --locked --manifest-path difftest/Cargo.toml
echo "   built in $(( $(date +%s) - start )) s"
bin=difftest/target/debug/difftest

echo "== generate $count sessions from seed $seed and decide every vector with the reference"
"$bin" generate "$seed" "$count" > "$scratch/generated.json"
"$bin" oracle "$documented" "$vectors/edge.json" "$scratch/generated.json" > "$scratch/oracle.json"

if [ "${1:-}" = "--update" ]; then
    cp "$scratch/generated.json" "$vectors/generated.json"
    cp "$scratch/oracle.json" "$vectors/oracle.json"
    echo "   updated $vectors/generated.json and $vectors/oracle.json"
else
    for f in generated.json oracle.json; do
        if ! cmp -s "$scratch/$f" "$vectors/$f"; then
            diff -u "$vectors/$f" "$scratch/$f" | head -40 >&2 || true
            echo "$vectors/$f is not what the generator and the reference produce: run scripts/difftest.sh --update and review the change" >&2
            exit 1
        fi
    done
fi
if grep -q '"error"' "$scratch/oracle.json"; then
    echo "the reference could not decide some vectors:" >&2
    grep -B1 -A2 '"error"' "$scratch/oracle.json" | head -40 >&2
    exit 1
fi

echo "== compare: policy-layer against the reference's decisions"
DIFFTEST_ORACLE="$scratch/oracle.json" cargo test -p policy-layer --test temporal_difftest -- --nocapture
