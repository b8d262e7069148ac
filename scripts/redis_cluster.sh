#!/usr/bin/env bash
# A Redis Cluster of N masters (3 by default), each with R replicas (0 by default), on this
# machine, beside any Redis already running here (the shared 6379 is never touched): every node
# on a free loopback port whose cluster bus port (port + 10000) is free too, its config, log and
# pid under DIR, no RDB snapshots (--save ""), AOF only with REDIS_CLUSTER_AOF=yes, and a short
# cluster-node-timeout (REDIS_CLUSTER_NODE_TIMEOUT ms, 2000 by default) so a killed master's
# replica is promoted within seconds. The slots are assigned by `redis-cli --cluster create`
# (even ranges, masters in the order they were started).
#
#   scripts/redis_cluster.sh start DIR [N] [R]  start the nodes, create the cluster, wait for
#                                                cluster_state:ok, print the masters' URLs
#   scripts/redis_cluster.sh urls DIR           one redis:// URL per node (masters first)
#   scripts/redis_cluster.sh broker-url DIR     the fastq broker URL (redis+cluster://…;…)
#   scripts/redis_cluster.sh kill DIR I         SIGKILL node I (1-based, as started)
#   scripts/redis_cluster.sh stop DIR           SIGKILL every node this script started there
#                                                (by the PIDs it recorded) and remove DIR
#
# Used by tests/faults/redis_cluster.py, bench/cluster_scaling.py and by hand:
#   dir=$(mktemp -d); scripts/redis_cluster.sh start "$dir" 3; ...; scripts/redis_cluster.sh stop "$dir"
set -euo pipefail

BOOT_TIMEOUT=${REDIS_CLUSTER_BOOT_TIMEOUT:-30}
NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-2000}
AOF=${REDIS_CLUSTER_AOF:-no}

# shellcheck source=scripts/lib/nodes.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nodes.sh"

die() { echo "redis_cluster: $*" >&2; exit 1; }

free_port() { # a free loopback port whose cluster bus port (+10000) is free as well
    python3 -c '
import socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
while True:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port + 10000 < 65536 and free(port + 10000):
        print(port)
        break
'
}

cli() { # cli PORT ARGS...
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "$port" "$@"
}

node_count() { cat "$1/count"; }

urls() {
    local dir=$1 i
    for i in $(seq "$(node_count "$dir")"); do
        echo "redis://127.0.0.1:$(cat "$dir/n$i/port")"
    done
}

broker_url() {
    local dir=$1 i parts=()
    for i in $(seq "$(cat "$dir/masters")"); do
        parts+=("redis+cluster://127.0.0.1:$(cat "$dir/n$i/port")")
    done
    (IFS=';'; echo "${parts[*]}")
}

kill_node() { # kill_node DIR I: SIGKILL node I and wait until it is gone
    kill_pid_files "$1/n$2/pid"
}

wait_ok() { # wait_ok DIR: until every live node says cluster_state:ok and knows every node
    local dir=$1 i deadline=$((SECONDS + BOOT_TIMEOUT)) count
    count=$(node_count "$dir")
    while :; do
        local ok=1
        for i in $(seq "$count"); do
            [ -e "$dir/n$i/pid" ] || continue
            local port
            port=$(cat "$dir/n$i/port")
            cli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
        done
        [ $ok = 1 ] && return 0
        [ $SECONDS -lt $deadline ] || die "the cluster in $dir is not ok after ${BOOT_TIMEOUT}s"
        sleep 0.1
    done
}

start() {
    local dir=$1 masters=${2:-3} replicas=${3:-0} i
    command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
    command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"
    [ "$masters" -ge 1 ] || die "N must be at least 1"
    [ "$replicas" -ge 0 ] || die "R must be at least 0"
    mkdir -p "$dir"
    [ ! -e "$dir/count" ] || die "$dir already holds a cluster (stop it first)"
    local count=$((masters * (replicas + 1)))
    echo "$count" >"$dir/count"
    echo "$masters" >"$dir/masters"
    for i in $(seq "$count"); do
        local n="$dir/n$i" port
        mkdir -p "$n"
        port=$(free_port)
        echo "$port" >"$n/port"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$n" \
            --cluster-enabled yes --cluster-config-file "$n/nodes.conf" \
            --cluster-node-timeout "$NODE_TIMEOUT" --cluster-replica-validity-factor 0 \
            --save "" --appendonly "$AOF" \
            --daemonize yes --pidfile "$n/pid" --logfile "$n/log"
    done
    for i in $(seq "$count"); do
        local deadline=$((SECONDS + BOOT_TIMEOUT))
        until cli "$(cat "$dir/n$i/port")" ping >/dev/null 2>&1; do
            [ $SECONDS -lt $deadline ] || die "node $i did not answer within ${BOOT_TIMEOUT}s"
            sleep 0.05
        done
    done
    # Slots by hand (`redis-cli --cluster create` refuses fewer than 3 masters): even ranges,
    # one config epoch per node, every node met through node 1, then each replica attached.
    local id_of=()
    for i in $(seq "$count"); do
        local port
        port=$(cat "$dir/n$i/port")
        cli "$port" cluster set-config-epoch "$i" >/dev/null
        id_of[i]=$(cli "$port" cluster myid)
    done
    for i in $(seq "$masters"); do
        local lo=$(((i - 1) * 16384 / masters)) hi=$((i * 16384 / masters - 1))
        cli "$(cat "$dir/n$i/port")" cluster addslotsrange "$lo" "$hi" >/dev/null
    done
    local first
    first=$(cat "$dir/n1/port")
    for i in $(seq 2 "$count"); do
        cli "$first" cluster meet 127.0.0.1 "$(cat "$dir/n$i/port")" >/dev/null
    done
    local deadline=$((SECONDS + BOOT_TIMEOUT))
    for i in $(seq "$count"); do
        until [ "$(cli "$(cat "$dir/n$i/port")" cluster nodes | grep -vc 'handshake\|noaddr')" -eq "$count" ]; do
            [ $SECONDS -lt $deadline ] || die "node $i did not meet the others in ${BOOT_TIMEOUT}s"
            sleep 0.05
        done
    done
    for i in $(seq $((masters + 1)) "$count"); do
        local master=$(((i - masters - 1) % masters + 1))
        cli "$(cat "$dir/n$i/port")" cluster replicate "${id_of[master]}" >/dev/null
    done
    wait_ok "$dir"
    # Replicas: wait until each has finished its first sync, so a kill test starts whole.
    for i in $(seq "$count"); do
        local port deadline=$((SECONDS + BOOT_TIMEOUT))
        port=$(cat "$dir/n$i/port")
        if cli "$port" role | head -1 | grep -q slave; then
            until cli "$port" info replication | grep -q 'master_link_status:up'; do
                [ $SECONDS -lt $deadline ] || die "replica $i did not sync in ${BOOT_TIMEOUT}s"
                sleep 0.1
            done
        fi
    done
    for i in $(seq "$masters"); do echo "redis://127.0.0.1:$(cat "$dir/n$i/port")"; done
}

stop() { # SIGKILL every node at once, then wait for each
    local dir=$1
    [ -e "$dir/count" ] || return 0
    kill_pid_files "$dir"/n*/pid
    rm -rf "$dir"
}

[ $# -ge 2 ] || die "usage: $0 start|urls|broker-url|kill|wait|stop DIR [...]"
cmd=$1
dir=$(realpath -m "$2")
shift 2
case $cmd in
    start) start "$dir" "${1:-3}" "${2:-0}" ;;
    urls) urls "$dir" ;;
    broker-url) broker_url "$dir" ;;
    kill) kill_node "$dir" "${1:?node number}" ;;
    wait) wait_ok "$dir" ;;
    stop) stop "$dir" ;;
    *) die "unknown command $cmd" ;;
esac
