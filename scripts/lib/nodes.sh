# Sourced by the local cluster scripts (redis_cluster.sh, rabbitmq_cluster.sh).

kill_pid_files() { # kill_pid_files FILE...: SIGKILL each process whose pid a FILE holds (all at
    # once, as a crash would), wait until each is gone (5 s at most apiece), remove the FILEs
    local file pid pids=()
    for file in "$@"; do
        pid=$(cat "$file" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        kill -KILL "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    done
    rm -f "$@"
}
