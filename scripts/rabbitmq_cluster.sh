#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes (3 by default) on this machine, beside any RabbitMQ already
# running here (the shared node on 5672 is never touched): each node has its own name
# (fastq-<id>-c<i>@localhost), AMQP and distribution ports (free ones, picked at start), data
# and log directories under DIR, no plugins (so no management listener), and one Erlang cookie
# for the cluster (DIR/home/.erlang.cookie, through HOME). Nodes 2..N join node 1 with
# `rabbitmqctl join_cluster`. epmd (port 4369) is shared with the other nodes: that is fine,
# the names differ.
#
#   scripts/rabbitmq_cluster.sh start DIR [N]   start N nodes, cluster them, print one URL a line
#   scripts/rabbitmq_cluster.sh urls DIR        one AMQP URL per node
#   scripts/rabbitmq_cluster.sh kill DIR I      SIGKILL node I (1-based): no goodbye, as a crash
#   scripts/rabbitmq_cluster.sh restart DIR I   boot node I again on its data; it rejoins
#   scripts/rabbitmq_cluster.sh ctl DIR I ARGS  rabbitmqctl against node I
#   scripts/rabbitmq_cluster.sh stop DIR        SIGKILL every node and remove DIR
#
# Runs the Erlang tools directly (/usr/lib/rabbitmq/bin, not Debian's wrapper that switches to
# the rabbitmq user), as the calling user. Used by tests/faults/rabbit_cluster.py and by hand:
#   dir=$(mktemp -d); scripts/rabbitmq_cluster.sh start "$dir"; ...; scripts/rabbitmq_cluster.sh stop "$dir"
set -euo pipefail

SBIN=${RABBITMQ_SBIN:-/usr/lib/rabbitmq/bin}
BOOT_TIMEOUT=${RABBITMQ_CLUSTER_BOOT_TIMEOUT:-90}

# shellcheck source=scripts/lib/nodes.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nodes.sh"

die() { echo "rabbitmq_cluster: $*" >&2; exit 1; }

free_port() { # a free loopback port, outside 35672-35682 (where rabbitmqctl itself listens)
    python3 -c '
import socket
while True:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if not 35672 <= port <= 35682:
        print(port)
        break
'
}

node_env() { # node_env DIR I: the environment of node I, as env(1) arguments
    local dir=$1 i=$2 n="$1/n$2"
    echo "HOME=$dir/home" \
        "RABBITMQ_NODENAME=$(cat "$n/name")" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=$(cat "$n/port")" \
        "RABBITMQ_DIST_PORT=$(cat "$n/dist_port")" \
        "RABBITMQ_MNESIA_BASE=$n/mnesia" \
        "RABBITMQ_LOG_BASE=$n/log" \
        "RABBITMQ_PID_FILE=$n/node.pid" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins" \
        "RABBITMQ_CONFIG_FILE=$n/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$n/advanced.config" \
        "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf" \
        "ERL_CRASH_DUMP=$n/erl_crash.dump" \
        "ERL_EPMD_ADDRESS=127.0.0.1"
}

ctl() { # ctl DIR I ARGS...
    local dir=$1 i=$2
    shift 2
    # shellcheck disable=SC2046
    env $(node_env "$dir" "$i") "$SBIN/rabbitmqctl" -q -n "$(cat "$dir/n$i/name")" "$@"
}

boot() { # boot DIR I: start node I detached (returns at once)
    local dir=$1 i=$2
    rm -f "$dir/n$i/node.pid"
    # shellcheck disable=SC2046
    (cd "$dir/n$i" && env $(node_env "$dir" "$i") "$SBIN/rabbitmq-server" -detached >"$dir/n$i/boot.out" 2>&1)
}

await_boot() { # await_boot DIR I: until node I runs the broker (its pid file written, app started)
    local dir=$1 i=$2
    if ! ctl "$dir" "$i" wait "$dir/n$i/node.pid" --timeout "$BOOT_TIMEOUT" >/dev/null; then
        tail -n 30 "$dir/n$i"/log/*.log >&2 2>/dev/null || true
        die "node $i ($(cat "$dir/n$i/name")) did not boot within ${BOOT_TIMEOUT}s"
    fi
}

kill_node() { # kill_node DIR I: SIGKILL node I's VM and wait until it is gone
    kill_pid_files "$1/n$2/node.pid"
}

urls() {
    local dir=$1 i
    for i in $(seq "$(cat "$dir/count")"); do
        echo "amqp://guest:guest@127.0.0.1:$(cat "$dir/n$i/port")//"
    done
}

start() {
    local dir=$1 count=${2:-3} id i
    [ -x "$SBIN/rabbitmq-server" ] || die "$SBIN/rabbitmq-server not found (apt-get install rabbitmq-server)"
    [ "$count" -ge 1 ] || die "N must be at least 1"
    mkdir -p "$dir/home"
    [ ! -e "$dir/count" ] || die "$dir already holds a cluster (stop it first)"
    id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:6])')
    python3 -c 'import uuid; print(uuid.uuid4().hex.upper())' >"$dir/home/.erlang.cookie"
    chmod 400 "$dir/home/.erlang.cookie"
    echo "[]." >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    echo "$count" >"$dir/count"
    for i in $(seq "$count"); do
        mkdir -p "$dir/n$i"
        echo "fastq-$id-c$i@localhost" >"$dir/n$i/name"
        free_port >"$dir/n$i/port"
        free_port >"$dir/n$i/dist_port"
        {
            echo "listeners.tcp.local = 127.0.0.1:$(cat "$dir/n$i/port")"
            echo "loopback_users = none"
        } >"$dir/n$i/rabbitmq.conf"
    done
    # Boot them side by side, then join them one at a time to node 1.
    for i in $(seq "$count"); do boot "$dir" "$i"; done
    for i in $(seq "$count"); do await_boot "$dir" "$i"; done
    local first
    first=$(cat "$dir/n1/name")
    for i in $(seq 2 "$count"); do
        ctl "$dir" "$i" stop_app >/dev/null
        ctl "$dir" "$i" join_cluster "$first" >/dev/null
        ctl "$dir" "$i" start_app >/dev/null
    done
    ctl "$dir" 1 await_online_nodes "$count" --timeout "$BOOT_TIMEOUT" >/dev/null
    urls "$dir"
}

stop() { # SIGKILL every node at once, then wait for each
    local dir=$1
    [ -e "$dir/count" ] || return 0
    kill_pid_files "$dir"/n*/node.pid
    rm -rf "$dir"
}

[ $# -ge 2 ] || die "usage: $0 start|urls|kill|restart|ctl|stop DIR [...]"
cmd=$1
dir=$(realpath -m "$2")
shift 2
case $cmd in
    start) start "$dir" "${1:-3}" ;;
    urls) urls "$dir" ;;
    kill) kill_node "$dir" "${1:?node number}" ;;
    restart) boot "$dir" "${1:?node number}" && await_boot "$dir" "$1" ;;
    ctl) i=${1:?node number}; shift; ctl "$dir" "$i" "$@" ;;
    stop) stop "$dir" ;;
    *) die "unknown command $cmd" ;;
esac
