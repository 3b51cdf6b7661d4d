#!/usr/bin/env bash
# A local three-master Redis Cluster for the tests (README: "Redis Cluster"): no persistence, no replicas.
#   scripts/redis-cluster.sh start   starts the nodes and creates the cluster; does nothing that is already done
#   scripts/redis-cluster.sh stop    stops the nodes (SHUTDOWN NOSAVE) and removes their directory
# PARLEY_REDIS_CLUSTER_PORTS (default "7001 7002 7003") names the ports; each node's cluster bus is its port +
# 10000. PARLEY_REDIS_CLUSTER_DIR (default /tmp/parley-redis-cluster) holds each node's nodes.conf and log.
set -euo pipefail
ports=(${PARLEY_REDIS_CLUSTER_PORTS:-7001 7002 7003})
dir="${PARLEY_REDIS_CLUSTER_DIR:-/tmp/parley-redis-cluster}"
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
up() { cli "$1" ping 2>/dev/null | grep -q PONG; }

case "${1:-}" in
start)
  for p in "${ports[@]}"; do
    up "$p" && continue
    mkdir -p "$dir/$p"
    # A node restarted with its nodes.conf rejoins the cluster it was part of (empty: nothing is saved).
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
      --daemonize yes --save "" --appendonly no --dir "$dir/$p" --logfile "$dir/$p/redis.log"
    for _ in $(seq 1 50); do up "$p" && break; sleep 0.1; done
    up "$p" || { echo "redis-cluster: node on port $p did not start (see $dir/$p/redis.log)" >&2; exit 1; }
  done
  # Created once; a re-run finds every slot assigned and leaves the cluster as it is.
  if ! cli "${ports[0]}" cluster info | grep -q '^cluster_slots_assigned:16384'; then
    seeds=(); for p in "${ports[@]}"; do seeds+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 100); do
    ok=1; for p in "${ports[@]}"; do cli "$p" cluster info | grep -q '^cluster_state:ok' || ok=0; done
    [ "$ok" = 1 ] && break; sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "redis-cluster: cluster_state is not ok on every node" >&2; exit 1; }
  echo "redis cluster up: redis://127.0.0.1:${ports[0]} (${ports[*]})"
  ;;
stop)
  for p in "${ports[@]}"; do cli "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2
  ;;
esac
