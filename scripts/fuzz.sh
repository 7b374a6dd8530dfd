#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ from the committed seeds (fuzz/seeds/<target>/, copied
# to a scratch corpus so the checkout stays clean).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]    default 60; scripts/test.sh runs 30 s each
#
# CI's round is short, and no run is reproducible (even with a fixed libFuzzer seed, the
# paths differ from run to run: hash maps are seeded per process). So a change to the fuzzed
# code gets long runs here first (scripts/fuzz.sh 1500), and each crash they find becomes a
# seed in fuzz/seeds/ and a regression test beside the code it fixed.
#
# Installs cargo-fuzz from crates.io when it is missing. cargo fuzz passes nightly-only
# compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Exits non-zero on
# the first target that finds a crash, naming the input that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
cargo_fuzz_version=0.13.2
targets=(jsonrpc sse context service)
# `--dev` with the profile in fuzz/Cargo.toml (hot crates optimized, the rest not) builds in
# less than half the time of cargo fuzz's default release build, and fuzzes at a quarter to
# a half of its speed; debug assertions and overflow checks stay on. No AddressSanitizer: the fuzzed code forbids
# `unsafe`, and ASan would instrument (and slow the build of) every dependency.
build_flags=(--dev --sanitizer none)

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

echo "== building the fuzz targets"
started=$SECONDS
cargo fuzz build "${build_flags[@]}"
echo "built in $((SECONDS - started))s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  corpus="$scratch/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  cp fuzz/seeds/"$target"/* "$corpus"/
  log="$scratch/$target.log"
  if ! cargo fuzz run "${build_flags[@]}" "$target" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    # The panic message, then the end of the log (stack, input and libFuzzer's summary).
    grep -A 12 -m 1 panicked "$log" || true
    echo "..."
    tail -n 40 "$log"
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    echo "fuzz target $target failed; the input that reproduces it: ${artifact:-(none written, see the log above)}" >&2
    [ -n "$artifact" ] && echo "reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $target $artifact" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
done
echo "== fuzzing: no crash in ${#targets[@]} targets, ${seconds}s each"
