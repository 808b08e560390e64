#!/usr/bin/env bash
# The listener's ingest (bench/run.sh part c: 100k actions) under `perf record`, thread by
# thread: where each thread's CPU goes and how long it waited to run. Complements profile.sh
# (callgrind counts instructions of one thread at a time; this shows the threads together,
# the kernel's share and the wake-ups between them, which is what mattered for the listener).
#
# Usage (repo root, after cargo build --release): bench/perf.sh
# Needs: perf (linux-perf; kernel.perf_event_paranoid <= 2 for a process of your own), curl.
# Output: bench/out/perf-<stamp>/ (perf.data, report per thread); the summary is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BINARIES_FROM=${BINARIES_FROM:-target/release}
BATCHES=${INGEST_BATCHES:-20000}
TOP=${TOP:-15}
OUT=${BENCH_OUT:-$ROOT/bench/out/perf-$(date +%Y%m%d-%H%M%S)}

for tool in perf curl pgrep; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is missing (apt-get install -y linux-perf curl procps)" >&2
    exit 1
  }
done
cargo build --release --quiet -p bench
mkdir -p "$OUT/bin"
cp -p "$BINARIES_FROM/listener" target/release/bench-stubs target/release/bench-drive "$OUT/bin/"
BIN=$OUT/bin
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$BIN/bench-stubs" --ports-file "$OUT/ports.env" --llm-delay-ms 20 --sse-prebuild "$BATCHES" >"$OUT/stubs.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1000); do [[ -s $OUT/ports.env ]] && break; sleep 0.02; done
# shellcheck disable=SC1091
source "$OUT/ports.env"
CRISP=http://127.0.0.1:$CRISP_PORT
BYTES=$(curl -sf "$CRISP/_firehose?batches=$BATCHES" | sed -n 's/.*"expected_file_bytes":\([0-9]*\).*/\1/p')

echo "== listener ingest, $((BATCHES * 5)) actions, under perf record -g"
curl -sf -X POST "$CRISP/_reset" >/dev/null
(cd "$OUT" && exec env -i "PATH=$PATH" "STREAM_URL=http://127.0.0.1:$SSE_PORT/stream/prod_bench?batches=$BATCHES" \
  SUMMARY_THRESHOLD=0 EVENT_DATA_PATH="$OUT/event_data.txt" DATA_DIR="$OUT/data" RUST_LOG=warn \
  perf record -F 4999 -g -o "$OUT/perf.data" "$BIN/listener") >"$OUT/listener.log" 2>&1 &
PERF_PID=$!
PIDS+=("$PERF_PID")
"$BIN/bench-drive" wait-file --path "$OUT/event_data.txt" --bytes "$BYTES" --crisp "$CRISP" --timeout-secs 120 |
  grep -v '^R '
sleep 1 # the store writer runs behind the file
LISTENER=$(pgrep -P "$PERF_PID" -x listener || true)
if [[ -n $LISTENER ]]; then
  echo "-- CPU per thread (schedstat: on CPU / runnable but waiting / times scheduled)"
  for t in /proc/"$LISTENER"/task/*; do
    awk -v name="$(cat "$t/comm")" '{printf "  %-16s %6.0f ms  %6.0f ms  %6d\n", name, $1/1e6, $2/1e6, $3}' "$t/schedstat"
  done
fi
kill -INT "$PERF_PID" 2>/dev/null || true
wait "$PERF_PID" 2>/dev/null || true
echo "-- context store writes dropped (warnings): $(grep -c 'context store is behind' "$OUT/listener.log" || true)"

set +o pipefail # head closes the pipes early
for comm in stream-reader tokio-rt-worker; do
  echo "-- top $TOP symbols of $comm threads (self time, % of all samples)"
  perf report -i "$OUT/perf.data" --no-children --comm "$comm" --sort sym -g none 2>/dev/null |
    grep '%' | tee "$OUT/report-$comm.txt" | head -n "$TOP"
done
