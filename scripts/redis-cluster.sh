#!/usr/bin/env bash
# A local Redis Cluster for measurements (docs/SCALING.md): 3 primaries +
# 3 replicas of Debian's redis-server on 127.0.0.1, append-only with
# appendfsync always, as the tests start it (tests/redis_cluster.rs).
#
#   scripts/redis-cluster.sh start DIR BASEPORT   # ports BASEPORT..BASEPORT+5
#   scripts/redis-cluster.sh stop  DIR BASEPORT   # shuts them down, removes DIR
#
# Prints the seed list for `chaff serve --store` on start. REDIS_APPENDFSYNC=everysec
# (default always) measures the documented trade-off (docs/SCALING.md).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?DIR}; base=${3:?BASEPORT}
ports=$(seq "$base" $((base + 5)))
case "$cmd" in
start)
  for p in $ports; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --daemonize yes \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --cluster-replica-validity-factor 0 \
      --appendonly yes --appendfsync "${REDIS_APPENDFSYNC:-always}" --save "" \
      --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
      --dir "$dir/$p" --logfile redis.log
  done
  for p in $ports; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for p in $ports; do
    for _ in $(seq 200); do
      redis-cli -p "$p" cluster info | grep -q cluster_state:ok &&
        { redis-cli -p "$p" info replication | grep -q -e role:master -e master_link_status:up; } && break
      sleep 0.1
    done
  done
  for p in $ports; do printf 'redis://127.0.0.1:%s,' "$p"; done | sed 's/,$/\n/'
  ;;
stop)
  for p in $ports; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|stop DIR BASEPORT" >&2; exit 2 ;;
esac
