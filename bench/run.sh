#!/usr/bin/env bash
# Benchmarks "against the limit" on this machine, end to end, with the release binaries:
#   a. web hook acknowledgement: wrk on POST /crisp/hooks (operator echo: no background work)
#      and on GET /health, pinned (webhook on CPU 0, wrk on CPU 1) and unpinned;
#   b. with work: 1,000 visitor messages (distinct conversations, CONTEXT_SCOPE=session, store
#      seeded by the listener) while the loopback LLM answers after 200 ms, paced and in a burst;
#      overhead per reply = (Crisp got the reply - hook sent) - LLM time; peak RSS;
#   c. listener ingest: 100k actions (20k batches of 5, 50 sessions round-robin) from a loopback
#      SSE firehose, SUMMARY_THRESHOLD=0, against `curl -sN URL > file` of the same stream.
# The stand-ins (bench-stubs) and the driver (bench-drive) are this directory's crate.
#
# Usage (from the repo root, after `cargo build --release`):
#   bench/run.sh                 # everything, RUNS times (default 2)
#   RUNS=1 ONLY=a,c bench/run.sh # a subset
#   QUIET_WAIT_SECS=120 bench/run.sh  # before each part, wait up to 120 s for no rustc running
#   ONLY=c PROACTIVE_TRIGGERS=ping_pong,dwell,repeat,error_page PROACTIVE_ERROR_PATTERN='(?i)error|404' \
#     bench/run.sh               # part c with proactive triggers on (the pattern: no spaces)
# Needs: wrk, GNU time (/usr/bin/time), curl, taskset (util-linux), pgrep (procps).
# Results: bench/out/<stamp>/ (results.tsv, raw logs); the figures table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=${RUNS:-2}
ONLY=${ONLY:-a,b,c}
WRK_SECS=${WRK_SECS:-10}
WRK_CONNS=${WRK_CONNS:-32}
HOOKS=${HOOKS:-1000}
HOOK_RATE=${HOOK_RATE:-200}
LLM_DELAY_MS=${LLM_DELAY_MS:-200}
INGEST_BATCHES=${INGEST_BATCHES:-20000}
SEED_BATCHES=${SEED_BATCHES:-2000}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${BENCH_OUT:-$ROOT/bench/out/$STAMP}
SECRET=bench-hook-secret
WEBSITE_ID=42286ab3-b29a-4fde-8538-da0ae501d825 # the fixtures' website
ECHO_FIXTURE=$ROOT/tests/fixtures/crisp/message-received-operator-echo.json

say() { printf '\n== %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

TOOLS=(curl taskset pgrep)
[[ ,$ONLY, == *,a,* ]] && TOOLS+=(wrk)
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk curl util-linux procps)"
done
[[ -x /usr/bin/time ]] || die "GNU time is missing (apt-get install -y time)"
# The binaries measured; BINARIES_FROM=dir measures a frozen copy instead of target/release.
BINARIES_FROM=${BINARIES_FROM:-target/release}
NEEDED=(listener)
[[ ,$ONLY, == *,a,* || ,$ONLY, == *,b,* ]] && NEEDED+=(webhook)
for bin in "${NEEDED[@]}"; do
  [[ -x $BINARIES_FROM/$bin ]] || die "$BINARIES_FROM/$bin is missing: run cargo build --release first"
done
say "building the harness (cargo build --release -p bench)"
cargo build --release --quiet -p bench
HARNESS=${CARGO_TARGET_DIR:-target}/release

mkdir -p "$OUT/bin"
# A frozen copy: a rebuild during the run does not change what is measured.
for bin in "${NEEDED[@]}"; do cp "$BINARIES_FROM/$bin" "$OUT/bin/"; done
cp "$HARNESS/bench-stubs" "$HARNESS/bench-drive" "$OUT/bin/"
BIN=$OUT/bin
RESULTS=$OUT/results.tsv
: >"$RESULTS"
{
  echo "date: $(date -Is)"
  echo "binaries: $BINARIES_FROM (built $(date -r "$BINARIES_FROM/webhook" -Is))"
  echo "HEAD now: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (+ uncommitted changes under crates/)')"
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "PROACTIVE_TRIGGERS=${PROACTIVE_TRIGGERS:-} PROACTIVE_ERROR_PATTERN=${PROACTIVE_ERROR_PATTERN:-}"
  for bin in "${NEEDED[@]}"; do sha256sum "$BIN/$bin"; done
} >"$OUT/env.txt"
cat "$OUT/env.txt"

PIDS=()
cleanup() {
  local p
  # Newest first: each binary before the /usr/bin/time that waits for it.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

RUN=0
rec() { printf '%s\t%s\t%s\n' "$RUN" "$1" "$2" >>"$RESULTS"; }
# R key=value lines of bench-drive, recorded under a prefix.
rec_drive() {
  local prefix=$1 file=$2 kv
  while IFS= read -r kv; do rec "${prefix}_${kv%%=*}" "${kv#*=}"; done < <(sed -n 's/^R //p' "$file")
}
# Other load on the machine (compiles share the 2 cores). QUIET_WAIT_SECS=N first waits up to N
# seconds for no rustc to be running.
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-0}
interference() {
  local rustc load waited=0
  while ((waited < QUIET_WAIT_SECS)) && pgrep -x rustc >/dev/null; do
    sleep 1
    waited=$((waited + 1))
  done
  rustc=$(pgrep -c -x rustc || true)
  load=$(cut -d' ' -f1 /proc/loadavg)
  rec "$1_rustc_procs" "${rustc:-0}"
  rec "$1_loadavg1" "$load"
  echo "   (other load: $rustc rustc processes, load average $load)"
}

# start_timed LABEL BIN CPUS [VAR=value...]: runs BIN under `/usr/bin/time -v` in $WORK with
# exactly these variables; sets CHILD_PID (the binary) and TIME_PID.
start_timed() {
  local label=$1 bin=$2 cpus=$3
  shift 3
  local cmd=(env -i "PATH=$PATH" "$@" /usr/bin/time -v -o "$WORK/$label.time" "$BIN/$bin")
  [[ -n $cpus ]] && cmd=(taskset -c "$cpus" "${cmd[@]}")
  (cd "$WORK" && exec "${cmd[@]}") >"$WORK/$label.out" 2>"$WORK/$label.err" &
  TIME_PID=$!
  PIDS+=("$TIME_PID")
  CHILD_PID=
  for _ in $(seq 200); do
    CHILD_PID=$(pgrep -P "$TIME_PID" || true)
    [[ -n $CHILD_PID ]] && break
    sleep 0.01
  done
  [[ -n $CHILD_PID ]] || die "$bin did not start"
  PIDS+=("$CHILD_PID") # on an early exit, GNU time would leave it running: stop it by pid
}
# Drops ended processes from PIDS, so that cleanup never signals a reused pid.
forget() {
  local keep=() p q
  for p in "${PIDS[@]}"; do
    for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
    keep+=("$p")
  done
  PIDS=("${keep[@]}")
}
# stop_timed LABEL: SIGTERM to the binary, waits for it; sets RSS_KIB (its peak RSS).
stop_timed() {
  kill -TERM "$CHILD_PID" 2>/dev/null || true
  wait "$TIME_PID" || true
  forget "$CHILD_PID" "$TIME_PID"
  RSS_KIB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/$1.time")
}
wait_http() {
  for _ in $(seq 500); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.02
  done
  die "$1 did not answer"
}
# wrk latency value (e.g. 812.00us, 1.20ms, 1.01s) in ms.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }
wrk_figures() { # file prefix
  local f=$1 p=$2
  rec "${p}_rps" "$(awk '/^Requests\/sec:/ {print $2}' "$f")"
  rec "${p}_p50_ms" "$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")"
  rec "${p}_p99_ms" "$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")"
  rec "${p}_non2xx" "$(awk '/Non-2xx/ {print $NF}' "$f" | grep . || echo 0)"
  rec "${p}_socket_errors" "$(grep -c 'Socket errors' "$f" || true)"
}

webhook_env() { # port; sets ENVV
  read -r -d "" -a ENVV <<EOV || true
WEBHOOK_SECRET=$SECRET CRISP_TOKEN_IDENTIFIER=bench-id CRISP_TOKEN_KEY=bench-key WEBSITE_ID=$WEBSITE_ID
    CRISP_API_BASE_URL=http://127.0.0.1:$CRISP_PORT/v1 OPENAI_API_KEY=sk-bench
    OPENAI_BASE_URL=http://127.0.0.1:$LLM_PORT/v1 BIND_ADDR=127.0.0.1:$1 DATA_DIR=$WORK/data
    EVENT_DATA_PATH=$WORK/event_data.txt CONTEXT_SCOPE=session MAX_CONCURRENT_REPLIES=1000 RUST_LOG=info
EOV
}
listener_env() { # batches event_data_path data_dir; sets ENVV
  read -r -d "" -a ENVV <<EOV || true
STREAM_URL=http://127.0.0.1:$SSE_PORT/stream/prod_bench?batches=$1 SUMMARY_THRESHOLD=0
    EVENT_DATA_PATH=$2 DATA_DIR=$3 OPENAI_API_KEY=sk-bench OPENAI_BASE_URL=http://127.0.0.1:$LLM_PORT/v1 RUST_LOG=info
    PROACTIVE_TRIGGERS=${PROACTIVE_TRIGGERS:-}
EOV
  # Added whole: a regular expression may hold spaces.
  ENVV+=("PROACTIVE_ERROR_PATTERN=${PROACTIVE_ERROR_PATTERN:-}")
}
firehose() { curl -sf "http://127.0.0.1:$CRISP_PORT/_firehose?batches=$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
reset_stubs() { curl -sf -X POST "http://127.0.0.1:$CRISP_PORT/_reset" >/dev/null; }

bench_a() { # mode: pinned | unpinned
  local mode=$1 port wcpu="" ccpu="" threads=2
  reset_stubs
  [[ $mode == pinned ]] && wcpu=0 ccpu=1 threads=1
  port=$("$BIN/bench-drive" free-port)
  webhook_env "$port"
  start_timed "a-$mode-webhook" webhook "$wcpu" "${ENVV[@]}"
  wait_http "http://127.0.0.1:$port/health"
  local hook="http://127.0.0.1:$port/crisp/hooks?key=$SECRET"
  local code
  code=$(curl -s -o "$WORK/a-echo-answer.json" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary "@$ECHO_FIXTURE" "$hook")
  [[ $code == 200 ]] || die "the hook answered $code to the operator echo"
  local wrk=(wrk "-t$threads" "-c$WRK_CONNS" --latency)
  [[ -n $ccpu ]] && wrk=(taskset -c "$ccpu" "${wrk[@]}")
  echo "   webhook CPUs: ${wcpu:-any}; wrk CPUs: ${ccpu:-any}, $threads thread(s), $WRK_CONNS connections, ${WRK_SECS}s"
  interference "a_$mode"
  "${wrk[@]}" -d2s "http://127.0.0.1:$port/health" >/dev/null # warm-up
  "${wrk[@]}" -d2s -s bench/hook.lua "$hook" >/dev/null
  HOOK_BODY=$ECHO_FIXTURE "${wrk[@]}" "-d${WRK_SECS}s" -s bench/hook.lua "$hook" >"$WORK/a-$mode-hook.wrk"
  "${wrk[@]}" "-d${WRK_SECS}s" "http://127.0.0.1:$port/health" >"$WORK/a-$mode-health.wrk"
  cat "$WORK/a-$mode-hook.wrk" "$WORK/a-$mode-health.wrk" | grep -E 'Running|Requests/sec|^ +(50|99)%|Non-2xx|Socket'
  wrk_figures "$WORK/a-$mode-hook.wrk" "a_${mode}_hook"
  wrk_figures "$WORK/a-$mode-health.wrk" "a_${mode}_health"
  # No background work may have started.
  local calls
  calls=$(curl -sf "http://127.0.0.1:$CRISP_PORT/_stats" | sed -n 's/.*"compose":\([0-9]*\).*/\1/p')
  rec "a_${mode}_background_calls" "$calls"
  stop_timed "a-$mode-webhook"
  rec "a_${mode}_webhook_rss_kib" "$RSS_KIB"
}

seed_store() {
  local bytes
  bytes=$(firehose "$SEED_BATCHES" expected_file_bytes)
  rm -rf "$WORK/data" "$WORK/seed_event_data.txt"
  listener_env "$SEED_BATCHES" "$WORK/seed_event_data.txt" "$WORK/data"
  reset_stubs
  start_timed seed-listener listener "" "${ENVV[@]}"
  "$BIN/bench-drive" wait-file --path "$WORK/seed_event_data.txt" --bytes "$bytes" \
    --crisp "http://127.0.0.1:$CRISP_PORT" --timeout-secs 60 >/dev/null
  sleep 1 # the store writer runs behind the file
  stop_timed seed-listener
  echo "   store seeded: $(find "$WORK/data/sessions" -type f | wc -l) Autoplay sessions ($((SEED_BATCHES * 5)) actions)"
}

bench_b() {
  local port rss mode
  seed_store
  port=$("$BIN/bench-drive" free-port)
  webhook_env "$port"
  start_timed b-webhook webhook "" "${ENVV[@]}"
  wait_http "http://127.0.0.1:$port/health"
  curl -sf -X POST "http://127.0.0.1:$CRISP_PORT/_config?llm_delay_ms=$LLM_DELAY_MS" >/dev/null
  for mode in paced burst; do
    local rate=$HOOK_RATE
    [[ $mode == burst ]] && rate=0
    reset_stubs
    interference "b_$mode"
    "$BIN/bench-drive" hooks --url "http://127.0.0.1:$port/crisp/hooks?key=$SECRET" \
      --crisp "http://127.0.0.1:$CRISP_PORT" --n "$HOOKS" --rate "$rate" --prefix "r${RUN}${mode:0:1}" \
      --raw-out "$WORK/b-$mode.csv" | tee "$WORK/b-$mode.txt" | grep -v '^R ' || echo "   (not every message was answered: see the figures)"
    rec_drive "b_$mode" "$WORK/b-$mode.txt"
    # Peak RSS so far (paced first, so the paced figure is the paced part alone).
    rec "b_${mode}_vmhwm_kib" "$(awk '/^VmHWM/ {print $2}' "/proc/$CHILD_PID/status")"
  done
  stop_timed b-webhook
  rss=$RSS_KIB
  rec b_webhook_rss_kib "$rss"
  rec b_replies_with_activity "$(grep -c 'linked_by.*SessionData' "$WORK/b-webhook.err" || true)"
  rec b_fallbacks "$(grep -c 'fallback message sent' "$WORK/b-webhook.err" || true)"
  echo "   webhook peak RSS ${rss} KiB; replies grounded in the visitor's session: $(grep -c 'linked_by.*SessionData' "$WORK/b-webhook.err" || true)"
}

bench_c() {
  local bytes lines stream_bytes rss got curl_pid
  bytes=$(firehose "$INGEST_BATCHES" expected_file_bytes)
  lines=$(firehose "$INGEST_BATCHES" expected_file_lines)
  stream_bytes=$(firehose "$INGEST_BATCHES" stream_bytes)
  echo "   stream: $INGEST_BATCHES batches, $stream_bytes bytes; expected event_data.txt: $lines lines, $bytes bytes"
  rm -rf "$WORK/c-data" "$WORK/c-event_data.txt" "$WORK/c-curl.sse"
  interference c_listener
  reset_stubs
  listener_env "$INGEST_BATCHES" "$WORK/c-event_data.txt" "$WORK/c-data"
  start_timed c-listener listener "" "${ENVV[@]}"
  "$BIN/bench-drive" wait-file --path "$WORK/c-event_data.txt" --bytes "$bytes" \
    --crisp "http://127.0.0.1:$CRISP_PORT" --timeout-secs 120 | tee "$WORK/c-listener.txt" | grep -v '^R ' || true
  rec_drive c_listener "$WORK/c-listener.txt"
  sleep 1
  stop_timed c-listener
  rss=$RSS_KIB
  got=$(wc -l <"$WORK/c-event_data.txt")
  rec c_listener_lines "$got"
  rec c_listener_rss_kib "$rss"
  rec c_store_writes_dropped_warnings "$(grep -c 'context store is behind' "$WORK/c-listener.err" || true)"
  rec c_proactive_firings "$(cat "$WORK/c-data/proactive.firings" 2>/dev/null | wc -l)"
  echo "   listener: $got lines (expected $lines), peak RSS $rss KiB"

  interference c_curl
  reset_stubs
  curl -sN "http://127.0.0.1:$SSE_PORT/stream/prod_bench?batches=$INGEST_BATCHES" >"$WORK/c-curl.sse" &
  curl_pid=$!
  PIDS+=("$curl_pid")
  "$BIN/bench-drive" wait-file --path "$WORK/c-curl.sse" --bytes "$stream_bytes" \
    --crisp "http://127.0.0.1:$CRISP_PORT" --timeout-secs 120 | tee "$WORK/c-curl.txt" | grep -v '^R ' || true
  kill -TERM "$curl_pid" 2>/dev/null || true
  wait "$curl_pid" 2>/dev/null || true
  forget "$curl_pid"
  rec_drive c_curl "$WORK/c-curl.txt"
  rm -f "$WORK/c-curl.sse"
}

say "starting the loopback stand-ins (LLM, Crisp, Autoplay SSE)"
mkdir -p "$OUT/stubs"
"$BIN/bench-stubs" --ports-file "$OUT/stubs/ports.env" --llm-delay-ms "$LLM_DELAY_MS" \
  --sse-prebuild "$INGEST_BATCHES,$SEED_BATCHES" >"$OUT/stubs/out.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1000); do [[ -s $OUT/stubs/ports.env ]] && break; sleep 0.02; done
# shellcheck disable=SC1091
source "$OUT/stubs/ports.env"
echo "   LLM :$LLM_PORT  Crisp :$CRISP_PORT  SSE :$SSE_PORT"

for RUN in $(seq 1 "$RUNS"); do
  WORK=$OUT/run$RUN
  mkdir -p "$WORK"
  if [[ ,$ONLY, == *,a,* ]]; then
    say "run $RUN/$RUNS: a. web hook acknowledgement (pinned)"
    bench_a pinned
    say "run $RUN/$RUNS: a. web hook acknowledgement (unpinned)"
    bench_a unpinned
  fi
  if [[ ,$ONLY, == *,b,* ]]; then
    say "run $RUN/$RUNS: b. $HOOKS visitor messages, LLM answering after ${LLM_DELAY_MS} ms"
    bench_b
  fi
  if [[ ,$ONLY, == *,c,* ]]; then
    say "run $RUN/$RUNS: c. listener ingest, $((INGEST_BATCHES * 5)) actions"
    bench_c
  fi
done

# ---- the figures table
v() { awk -F'\t' -v r="$1" -v k="$2" '$1 == r && $2 == k {x = $3} END {print x}' "$RESULTS"; }
# check EXPR with $x bound: awk truth
holds() { awk -v x="$1" "BEGIN { exit !($2) }" 2>/dev/null; }
row() { # label key target-text awk-condition-on-x (may be empty)
  local label=$1 key=$2 target=$3 cond=$4 r vals="" verdict="" x
  for r in $(seq 1 "$RUNS"); do
    x=$(v "$r" "$key")
    vals+=$(printf ' %14s' "${x:--}")
    if [[ -n $cond && -n $x ]]; then
      if holds "$x" "$cond"; then verdict+=" met"; else verdict+=" MISSED"; fi
    fi
  done
  printf '%-52s%s   %-16s%s\n' "$label" "$vals" "$target" "$verdict"
}
ratio_rows() {
  local r h w
  for r in $(seq 1 "$RUNS"); do
    for m in pinned unpinned; do
      h=$(v "$r" "a_${m}_hook_rps")
      w=$(v "$r" "a_${m}_health_rps")
      [[ -n $h && -n $w ]] && RUN=$r rec "a_${m}_hook_vs_health_pct" "$(awk -v h="$h" -v w="$w" 'BEGIN {printf "%.1f", 100 * h / w}')"
      true
    done
    h=$(v "$r" c_listener_elapsed_ms)
    w=$(v "$r" c_curl_elapsed_ms)
    [[ $h =~ ^[0-9.]+$ && $w =~ ^[0-9.]+$ ]] && RUN=$r rec c_listener_vs_curl_x "$(awk -v h="$h" -v w="$w" 'BEGIN {printf "%.2f", h / w}')"
    h=$(v "$r" c_listener_rss_kib)
    [[ -n $h ]] && RUN=$r rec c_listener_rss_mib "$(awk -v h="$h" 'BEGIN {printf "%.1f", h / 1024}')"
    h=$(v "$r" b_webhook_rss_kib)
    [[ -n $h ]] && RUN=$r rec b_webhook_rss_mib "$(awk -v h="$h" 'BEGIN {printf "%.1f", h / 1024}')"
    true
  done
}
ratio_rows
{
  say "figures ($OUT)"
  hdr=""
  for r in $(seq 1 "$RUNS"); do hdr+=$(printf ' %14s' "run $r"); done
  printf '%-52s%s   %-16s%s\n' "metric" "$hdr" "target" " verdict"
  for m in pinned unpinned; do
    [[ ,$ONLY, == *,a,* ]] || break
    echo "-- a. ack, $m (webhook $([[ $m == pinned ]] && echo 'CPU 0, wrk -t1 CPU 1' || echo 'and wrk -t2 unpinned'), ${WRK_CONNS} conns, ${WRK_SECS}s)"
    row "hook (operator echo) req/s" "a_${m}_hook_rps" "" ""
    row "/health req/s" "a_${m}_health_rps" "" ""
    row "hook req/s as % of /health" "a_${m}_hook_vs_health_pct" ">= 80 %" "x >= 80"
    row "hook p50 ms" "a_${m}_hook_p50_ms" "" ""
    row "hook p99 ms" "a_${m}_hook_p99_ms" "< 5 ms" "x < 5"
    row "/health p50 ms" "a_${m}_health_p50_ms" "" ""
    row "/health p99 ms" "a_${m}_health_p99_ms" "" ""
    row "hook non-2xx answers" "a_${m}_hook_non2xx" "0" "x == 0"
    row "background Crisp calls" "a_${m}_background_calls" "0" "x == 0"
    row "webhook peak RSS KiB" "a_${m}_webhook_rss_kib" "" ""
  done
  if [[ ,$ONLY, == *,b,* ]]; then
    for m in paced burst; do
      echo "-- b. $HOOKS visitor messages, $([[ $m == paced ]] && echo "paced ${HOOK_RATE}/s" || echo 'all at once'), LLM ${LLM_DELAY_MS} ms, CONTEXT_SCOPE=session, MAX_CONCURRENT_REPLIES=1000"
      row "answered (Crisp POST message arrivals)" "b_${m}_answered" "= $HOOKS" "x == $HOOKS"
      row "extra (duplicate) replies" "b_${m}_extra_replies" "0" "x == 0"
      row "hook ack p99 ms" "b_${m}_ack_p99_ms" "" ""
      row "LLM time p50 ms (stub)" "b_${m}_llm_p50_ms" "" ""
      row "end-to-end p50 ms" "b_${m}_e2e_p50_ms" "" ""
      row "overhead p50 ms" "b_${m}_overhead_p50_ms" "" ""
      row "overhead p99 ms" "b_${m}_overhead_p99_ms" "< 5 ms" "x < 5"
      row "overhead max ms" "b_${m}_overhead_max_ms" "" ""
      row "  hook sent -> LLM request p99 ms" "b_${m}_pre_llm_p99_ms" "" ""
      row "  LLM answer -> Crisp message p99 ms" "b_${m}_post_llm_p99_ms" "" ""
    done
    row "webhook peak RSS KiB after the paced part (VmHWM)" "b_paced_vmhwm_kib" "" ""
    row "webhook peak RSS MiB, whole b (time -v)" "b_webhook_rss_mib" "" ""
    row "replies grounded in the visitor's session" "b_replies_with_activity" "" ""
  fi
  if [[ ,$ONLY, == *,c,* ]]; then
    echo "-- c. listener ingest, $((INGEST_BATCHES * 5)) actions ($INGEST_BATCHES batches of 5, 50 sessions), SUMMARY_THRESHOLD=0, PROACTIVE_TRIGGERS=${PROACTIVE_TRIGGERS:-(off)}"
    row "listener: connect -> all lines written, ms" c_listener_elapsed_ms "" ""
    row "listener lines in event_data.txt" c_listener_lines "= $((INGEST_BATCHES * 15))" "x == $((INGEST_BATCHES * 15))"
    row "curl -sN > file: connect -> all bytes, ms" c_curl_elapsed_ms "" ""
    row "listener / curl" c_listener_vs_curl_x "<= 3x" "x <= 3"
    row "listener peak RSS MiB" c_listener_rss_mib "< 30 MiB" "x < 30"
    row "'context store is behind' warnings" c_store_writes_dropped_warnings "" ""
    row "proactive firings recorded" c_proactive_firings "" ""
  fi
  echo "-- interference (rustc processes / load average at the start of each part)"
  for k in $(awk -F'\t' '$2 ~ /_rustc_procs$/ {sub(/_rustc_procs$/, "", $2); print $2}' "$RESULTS" | awk '!seen[$0]++'); do
    line=""
    for r in $(seq 1 "$RUNS"); do line+=$(printf ' %14s' "$(v "$r" "${k}_rustc_procs")/$(v "$r" "${k}_loadavg1")"); done
    printf '%-52s%s\n' "$k" "$line"
  done
} | tee "$OUT/figures.txt"
