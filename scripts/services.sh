#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and/or RabbitMQ (127.0.0.1:5672) answer: starts them, and
# installs them from Debian's packages when they are missing. Loopback only.
# Usage: scripts/services.sh [redis] [rabbitmq]   (both when no argument)
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local port=$1 secs=$2
  for _ in $(seq $((secs * 5))); do port_open "$port" && return 0; sleep 0.2; done
  return 1
}
apt_install() {
  command -v apt-get >/dev/null || { echo "services: $1 is missing and apt-get is unavailable" >&2; exit 1; }
  echo "services: installing $1"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

redis() {
  if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  echo "services: starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/fastq.log
  wait_port 6379 20 || { echo "services: Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
  for _ in $(seq 50); do [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ] && return; sleep 0.2; done
  echo "services: Redis does not answer PING" >&2; exit 1
}

rabbitmq() {
  if port_open 5672 && rabbitmqctl -q status >/dev/null 2>&1; then return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! port_open 5672; then
    echo "services: starting rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  # The app may be stopped (stop_app) while the node runs.
  port_open 5672 || rabbitmqctl -q start_app >/dev/null 2>&1 || true
  wait_port 5672 90 || { echo "services: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(redis rabbitmq)
for t in "${targets[@]}"; do "$t"; done
echo "services: ${targets[*]} answering on 127.0.0.1"
