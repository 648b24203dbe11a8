#!/usr/bin/env bash
# Two vault binaries side by side: each `serve --dev` on a fresh data
# directory at the default log level (its stdout through a pipe, as a
# container runtime reads it), both populated, then the same load generator
# against each in turn, ROUNDS times. Only the ratios within one round mean
# something on a shared machine.
#
#   BASE=/path/to/old/pii-vault NEW=target/release/pii-vault benches/ab.sh
#
# Settings: CUSTOMERS (2000), ROUNDS (3), OPS (tokenize,put), BATCH (1),
# BENCH (target/release/pii-vault-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:?BASE names the baseline pii-vault binary}
NEW=${NEW:-target/release/pii-vault}
BENCH=${BENCH:-target/release/pii-vault-bench}
CUSTOMERS=${CUSTOMERS:-2000}
ROUNDS=${ROUNDS:-3}
OPS=${OPS:-tokenize,put}
BATCH=${BATCH:-1}
DIR=$(mktemp -d /tmp/pii-vault-ab.XXXXXX)
declare -A PORT=([base]=50081 [new]=50082) BIN=([base]=$BASE [new]=$NEW)

stop_all() {
  pkill -f -- "--data-dir $DIR/" 2>/dev/null || true
  wait || true
  rm -rf "$DIR"
}
trap stop_all EXIT

for name in base new; do
  "${BIN[$name]}" serve --dev --data-dir "$DIR/$name" --listen "127.0.0.1:${PORT[$name]}" 2>&1 \
    | cat >"$DIR/$name.log" &
  until "${BIN[$name]}" health --addr "http://127.0.0.1:${PORT[$name]}" --timeout 200ms \
    >/dev/null 2>&1; do sleep 0.05; done
done
bench() { # name, then pii-vault-bench's options
  local name=$1; shift
  PII_VAULT_API_KEY=$(cat "$DIR/$name/dev-api-key") "$BENCH" \
    --addr "http://127.0.0.1:${PORT[$name]}" --customers "$CUSTOMERS" "$@"
}
for name in base new; do bench "$name" --populate-only >/dev/null; done
for round in $(seq 1 "$ROUNDS"); do
  for name in base new; do
    echo "== round $round: $name"
    bench "$name" --connections 2 --concurrency 32 --duration 10s --warmup 2s \
      --op "$OPS" --batch "$BATCH" 2>&1 | grep '^vault'
  done
done
