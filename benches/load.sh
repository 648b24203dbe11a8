#!/usr/bin/env bash
# The side-by-side load figures of BENCHMARKS.md: a release vault on a fresh
# dev data directory, a data set of CUSTOMERS synthetic customers (6 fields and
# 4 standalone tokens each), then `pii-vault-bench --baseline` for every
# operation at 64 requests in flight (2 connections x 32), once with single
# items and once with batches of 100, with latency at half the maximum rate;
# then a restart (time to SERVING), resident memory and store bytes per value.
#
#   benches/load.sh                      # 10,000 customers, baseline included
#   CUSTOMERS=1000000 BASELINE= benches/load.sh
#
# Needs PostgreSQL with pgcrypto for the baseline (DATABASE_URL, default
# host=127.0.0.1 user=postgres dbname=test). Writes JSON to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOMERS=${CUSTOMERS:-10000}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-2}
CONCURRENCY=${CONCURRENCY:-32}
BASELINE=${BASELINE---baseline}
DATA=${DATA:-/tmp/pii-vault-bench-$CUSTOMERS}
OUT=${OUT:-/tmp/pii-vault-bench-out-$CUSTOMERS}
PORT=${PORT:-50071}
ADDR=http://127.0.0.1:$PORT
BIN=${BIN:-target/release/pii-vault}
BENCH=${BENCH:-target/release/pii-vault-bench}
export PII_VAULT_BENCH_DATABASE_URL=${DATABASE_URL:-host=127.0.0.1 user=postgres dbname=test}

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked
mkdir -p "$OUT"
SERVER=

# Starts the vault and sets SERVER (its pid) and STARTUP (seconds from the
# start of `serve` until the health check says SERVING).
start_vault() {
  local started
  started=$(date +%s.%N)
  "$BIN" serve --dev --data-dir "$DATA" --listen 127.0.0.1:$PORT \
    >>"$OUT/serve.log" 2>&1 &
  SERVER=$!
  until "$BIN" health --addr "$ADDR" --timeout 200ms >/dev/null 2>&1; do
    kill -0 "$SERVER" || { echo "vault died, see $OUT/serve.log" >&2; exit 1; }
    sleep 0.02
  done
  STARTUP=$(echo "$(date +%s.%N) - $started" | bc)
}

stop_vault() {
  kill -TERM "$SERVER"
  wait "$SERVER" || true
}

rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$SERVER/status"; echo; }

trap '[ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null || true' EXIT

start_vault
echo "first start: $STARTUP s" | tee "$OUT/startup.txt"
export PII_VAULT_API_KEY=$(cat "$DATA/dev-api-key")
bench() { "$BENCH" --addr "$ADDR" --customers "$CUSTOMERS" --connections "$CONNECTIONS" \
  --concurrency "$CONCURRENCY" --duration "${RUN_DURATION:-$DURATION}" --warmup "$WARMUP" "$@"; }

bench --populate-only --json | tee "$OUT/populate.json"
echo "after populate: $(rss)" | tee -a "$OUT/startup.txt"
sleep 2
store=$(du -sb "$DATA/store" | cut -f1)
values=$(jq '.tokens' "$OUT/populate.json")
echo "store after populating: $store bytes for $values values ($CUSTOMERS customers x 6 fields" \
  "+ 4 standalone tokens): $((store / values)) bytes per value" | tee "$OUT/store.txt"

bench --op put,get,tokenize,detokenize,mixed --batch 1 --half-rate $BASELINE --json \
  >"$OUT/single.json"
bench --op tokenize,detokenize --batch 100 --half-rate $BASELINE --json >"$OUT/batch100.json"
echo "after load: $(rss)" | tee -a "$OUT/startup.txt"

stop_vault
start_vault
echo "restart to SERVING: $STARTUP s" | tee -a "$OUT/startup.txt"
echo "after restart: $(rss)" | tee -a "$OUT/startup.txt"
RUN_DURATION=5s bench --op get --batch 1 --json >"$OUT/after-restart.json"
echo "after restart and 5 s of get: $(rss)" | tee -a "$OUT/startup.txt"
stop_vault
SERVER=

echo "store at the end (runs added values): $(du -sb "$DATA/store" | cut -f1) bytes" | tee -a "$OUT/store.txt"
