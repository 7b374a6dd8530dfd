# shellcheck shell=bash
# Sourced by the project's scripts: the processes a script starts go into `pids`, and
# `stop_processes` (called from the script's EXIT trap) stops them all.
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
