#!/usr/bin/env bash
# Where a vault operation's time goes, on a running vault (e.g. the one
# benches/load.sh populated): runs `pii-vault-bench` for one operation and,
# during it, (1) the server's CPU use from /proc, (2) its disk syncs
# (strace -T: count and time of fdatasync / sync_file_range), (3) a CPU profile
# (perf record, software cpu-clock: this machine has no hardware counters).
#
#   PID=<vault pid> ADDR=http://127.0.0.1:50071 benches/profile.sh put 1
set -euo pipefail
OP=${1:?op}; BATCH=${2:-1}
PID=${PID:?pid of the vault}; ADDR=${ADDR:-http://127.0.0.1:50071}
BENCH=${BENCH:-target/release/pii-vault-bench}
OUT=${OUT:-/tmp/pii-vault-profile}/$OP-$BATCH
CUSTOMERS=${CUSTOMERS:-10000}
FRAMES=${FRAMES:-sled_writer|sled::tree::Tree::apply_batch|Db::flush|sync_data|aes_gcm|Aes256|GHash|polyval|hmac|h2::|hyper::|tonic::|prost::|unwrap_dek|DekCache|fdatasync|sync_file_range|epoll_wait|malloc|_int_free|sha2|postcard|tokio::runtime::task}
mkdir -p "$OUT"
# Nanoseconds on a CPU and waiting for one (run queue), over the server's threads.
sched() { cat /proc/"$PID"/task/*/schedstat | awk '{ run += $1; wait += $2 } END { print run, wait }'; }

"$BENCH" --addr "$ADDR" --customers "$CUSTOMERS" --populate never --op "$OP" --batch "$BATCH" --sample "${SAMPLE:-10000}" \
  --duration 12s --warmup 1s --json >"$OUT/bench.json" &
BENCH=$!
sleep 2
read -r run0 wait0 < <(sched)
t0=$(date +%s.%N)
timeout -s INT 4 strace -f -T -qq -e trace=fdatasync,fsync,sync_file_range -p "$PID" \
  -o "$OUT/strace.txt" || true
perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -p "$PID" -o "$OUT/perf.data" -- sleep 4 2>/dev/null >/dev/null
read -r run1 wait1 < <(sched)
t1=$(date +%s.%N)
wait "$BENCH"
cpu=$(echo "scale=2; ($run1 - $run0) / 1000000000 / ($t1 - $t0)" | bc)
queued=$(echo "scale=2; ($wait1 - $wait0) / 1000000000 / ($t1 - $t0)" | bc)
{
  echo "server threads: on a CPU $cpu cores on average (of 2), runnable but waiting for a CPU $queued threads on average"
  uptime
  awk '/fdatasync|fsync\(/ { n++; gsub(/[<>]/, "", $NF); t += $NF } END {
    if (n) printf "fdatasync: %d in 4 s (%.0f/s), mean %.2f ms\n", n, n / 4, 1000 * t / n }' "$OUT/strace.txt"
  awk '/sync_file_range/ { n++; gsub(/[<>]/, "", $NF); t += $NF } END {
    if (n) printf "sync_file_range: %d in 4 s, mean %.2f ms\n", n, 1000 * t / n }' "$OUT/strace.txt"
  jq -r '.runs[] | "bench: \(.requests_per_sec) req/s, \(.values_per_sec) values/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms"' "$OUT/bench.json"
  echo "perf (self time, top 25):"
  perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | cut -c1-140 | head -25
  echo "perf (inclusive time of chosen frames):"
  perf report -i "$OUT/perf.data" --stdio --children --sort symbol -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | grep -E "$FRAMES" | cut -c1-160 | head -30
} | tee "$OUT/summary.txt"
