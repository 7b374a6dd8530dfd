# shellcheck shell=bash
# Sourced by the project's scripts that run the demo tool server and the sidecar: the release
# build, a scratch folder, and the processes a script starts (in `pids`), all cleaned up on exit.
pids=()

# Stops every process in `pids`: TERM to all, then KILL whatever is left after 5 s; reaps them.
stop_processes() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

# Builds the demo tool server and policy-sidecar (release); sets `bin` to their folder.
# Needs `root`, the checkout. The first build takes minutes: on a terminal cargo shows its
# progress bar and the crates it compiles; otherwise a line every 30 s says it is still going.
build_release() {
    local started=$SECONDS
    if [ -t 2 ]; then
        (cd "$root" && cargo build --release -p refund-tool -p policy-sidecar)
    else
        (cd "$root" && cargo build --release --quiet -p refund-tool -p policy-sidecar) &
        local build=$!
        while kill -0 "$build" 2>/dev/null; do
            for _ in $(seq 300); do kill -0 "$build" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$build" 2>/dev/null; then
                echo "   still building (release, $((SECONDS - started)) s so far)" >&2
            fi
        done
        wait "$build"
    fi
    echo "   built in $((SECONDS - started)) s" >&2
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
}

# Makes a scratch folder, `scratch`, and an EXIT trap that stops the processes in `pids` and
# removes the folder, keeping the script's exit status.
use_scratch() {
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    trap cleanup_on_exit EXIT
}

cleanup_on_exit() {
    local status=$?
    trap - EXIT INT TERM
    stop_processes
    rm -rf "$scratch"
    exit "$status"
}
