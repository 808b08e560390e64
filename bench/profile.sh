#!/usr/bin/env bash
# Profiles the hot paths of the release binaries with callgrind (instruction counts: exact and
# unaffected by other load, unlike the timings of run.sh). Collection is switched on only once
# each process is up (callgrind_control), so start-up (clap, TLS roots, ...) is left out:
#   1. listener ingest: 10k actions (2,000 batches of 5, 50 sessions), SUMMARY_THRESHOLD=0;
#   2. webhook ack path: 2,000 POSTs of the operator echo (no outside calls), then, for
#      comparison, 2,000 GET /health;
#   3. webhook reply path: 200 visitor messages (distinct conversations, CONTEXT_SCOPE=session,
#      store seeded), loopback LLM answering after 20 ms, everything until all are answered.
# Prints the top functions by inclusive and by self cost (callgrind_annotate) for each.
#
# Usage (repo root, after cargo build --release): bench/profile.sh
# Needs: valgrind (callgrind, callgrind_control, callgrind_annotate), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BINARIES_FROM=${BINARIES_FROM:-target/release}
TOP=${TOP:-10}
OUT=${BENCH_OUT:-$ROOT/bench/out/profile-$(date +%Y%m%d-%H%M%S)}
SECRET=bench-hook-secret
WEBSITE_ID=42286ab3-b29a-4fde-8538-da0ae501d825
ECHO_FIXTURE=$ROOT/tests/fixtures/crisp/message-received-operator-echo.json

for tool in valgrind callgrind_control callgrind_annotate curl pgrep; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is missing (apt-get install -y valgrind curl procps)" >&2
    exit 1
  }
done
cargo build --release --quiet -p bench
mkdir -p "$OUT/bin"
cp -p "$BINARIES_FROM/listener" "$BINARIES_FROM/webhook" target/release/bench-stubs target/release/bench-drive "$OUT/bin/"
BIN=$OUT/bin
WORK=$OUT
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

"$BIN/bench-stubs" --ports-file "$OUT/ports.env" --llm-delay-ms 20 --sse-prebuild 2000 >"$OUT/stubs.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1000); do [[ -s $OUT/ports.env ]] && break; sleep 0.02; done
# shellcheck disable=SC1091
source "$OUT/ports.env"
CRISP=http://127.0.0.1:$CRISP_PORT
BYTES=$(curl -sf "$CRISP/_firehose?batches=2000" | sed -n 's/.*"expected_file_bytes":\([0-9]*\).*/\1/p')

# grind LABEL BIN [VAR=value...]: starts BIN under callgrind, collection off; sets PID.
grind() {
  local label=$1 bin=$2
  shift 2
  (cd "$WORK" && exec env -i "PATH=$PATH" "$@" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.$label.out" "$BIN/$bin") >"$OUT/$label.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}
collect() { callgrind_control -i "$1" "$PID" >/dev/null 2>&1; }
stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$PID" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}") # never signal a reused pid at exit
}
wait_http() {
  for _ in $(seq 1500); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "error: $1 did not answer" >&2
  exit 1
}
report() { # callgrind file, title
  set +o pipefail # head closes the pipes early
  local total
  say "$2"
  total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {print $1; exit}')
  echo "instructions collected: $total"
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null | functions >"$1.inclusive.txt"
  callgrind_annotate "$1" 2>/dev/null | functions >"$1.self.txt"
  echo "-- top $TOP by inclusive cost"
  head -n "$TOP" "$1.inclusive.txt"
  echo "-- top $TOP by inclusive cost among the product's own functions (agent_core, listener, webhook)"
  grep -E '(agent_core|listener|webhook)::' "$1.inclusive.txt" | head -n "$TOP"
  echo "-- top $TOP by self cost"
  head -n "$TOP" "$1.self.txt"
  set -o pipefail
}
# The function lines of callgrind_annotate, without the totals and the file prefix '???:'.
functions() {
  awk '/^-+$/ {n++} n >= 3' | grep -E '^ *[0-9,]+ \(' | grep -v 'PROGRAM TOTALS' |
    sed -E 's/ \[[^]]*\]$//; s/\)  \?\?\?:/)  /' | cut -c1-240
}
listener_env() { # batches event_data_path data_dir [delay_ms]; sets ENVV
  read -r -d "" -a ENVV <<EOV || true
STREAM_URL=http://127.0.0.1:$SSE_PORT/stream/prod_bench?batches=$1&delay_ms=${4:-0} SUMMARY_THRESHOLD=0
    EVENT_DATA_PATH=$2 DATA_DIR=$3 RUST_LOG=info
EOV
}
webhook_env() { # port; sets ENVV
  read -r -d "" -a ENVV <<EOV || true
WEBHOOK_SECRET=$SECRET CRISP_TOKEN_IDENTIFIER=bench-id CRISP_TOKEN_KEY=bench-key WEBSITE_ID=$WEBSITE_ID
    CRISP_API_BASE_URL=$CRISP/v1 OPENAI_API_KEY=sk-bench OPENAI_BASE_URL=http://127.0.0.1:$LLM_PORT/v1
    BIND_ADDR=127.0.0.1:$1 DATA_DIR=$WORK/data EVENT_DATA_PATH=$WORK/event_data.txt CONTEXT_SCOPE=session
    MAX_CONCURRENT_REPLIES=1000 RUST_LOG=info
EOV
}

say "1. listener ingest under callgrind (10k actions)"
rm -rf "$WORK/data" "$WORK/event_data.txt"
# The stream stub holds its answer 8 s: collection starts while the listener waits for it.
listener_env 2000 "$WORK/event_data.txt" "$WORK/data" 8000
grind listener listener "${ENVV[@]}"
sleep 4
collect on
"$BIN/bench-drive" wait-file --path "$WORK/event_data.txt" --bytes "$BYTES" --crisp "$CRISP" --timeout-secs 300 |
  grep -v '^R '
sleep 3 # the store writer runs behind the file
collect off
stop
echo "store: $(find "$WORK/data/sessions" -type f | wc -l) sessions"

say "2. webhook ack path under callgrind (2,000 operator echoes, then 2,000 GET /health)"
port=$("$BIN/bench-drive" free-port)
webhook_env "$port"
grind webhook-ack webhook "${ENVV[@]}"
wait_http "http://127.0.0.1:$port/health"
"$BIN/bench-drive" repeat --url "http://127.0.0.1:$port/crisp/hooks?key=$SECRET" --body-file "$ECHO_FIXTURE" \
  --n 200 --concurrency 8 >/dev/null # warm-up
collect on
"$BIN/bench-drive" repeat --url "http://127.0.0.1:$port/crisp/hooks?key=$SECRET" --body-file "$ECHO_FIXTURE" \
  --n 2000 --concurrency 8 | grep -v '^R '
callgrind_control -d hook "$PID" >/dev/null 2>&1 # dump (callgrind.webhook-ack.out.1) and zero
"$BIN/bench-drive" repeat --url "http://127.0.0.1:$port/health" --n 2000 --concurrency 8 | grep -v '^R '
callgrind_control -d health "$PID" >/dev/null 2>&1
collect off
stop

say "3. webhook reply path under callgrind (200 visitor messages, LLM 20 ms)"
port=$("$BIN/bench-drive" free-port)
webhook_env "$port"
grind webhook-reply webhook "${ENVV[@]}"
wait_http "http://127.0.0.1:$port/health"
curl -sf -X POST "$CRISP/_reset" >/dev/null
collect on
"$BIN/bench-drive" hooks --url "http://127.0.0.1:$port/crisp/hooks?key=$SECRET" --crisp "$CRISP" --n 200 \
  --rate 20 --prefix prof --timeout-secs 300 | grep -E '^(hooks|  answered)'
collect off
stop

{
  report "$OUT/callgrind.listener.out" "listener ingest (10k actions, SUMMARY_THRESHOLD=0)"
  report "$(ls "$OUT"/callgrind.webhook-ack.out.1* | head -1)" "webhook ack path: 2,000 POST /crisp/hooks (operator echo)"
  report "$(ls "$OUT"/callgrind.webhook-ack.out.2* | head -1)" "webhook, for comparison: 2,000 GET /health"
  report "$OUT/callgrind.webhook-reply.out" "webhook reply path: 200 visitor messages answered"
} | tee "$OUT/profile.txt"
echo
echo "callgrind files: $OUT (callgrind_annotate --inclusive=yes FILE; kcachegrind FILE)"
