#!/usr/bin/env bash
# The inbox journal, measured with the release webhook against the bench stand-ins:
#   1. hook acknowledgement at 32 connections for new visitor messages (each recorded and
#      flushed before its 200; INBOX_MAX_MESSAGES raised so that none is refused while the
#      replies, which share the 2 cores, fall behind) beside the operator echo and /health;
#   2. replay at start: a journal of N recorded messages (default 10,000), time until every one
#      is settled as answered.
# Usage (repo root, after `cargo build --release`): bench/inbox.sh   [SECS=5 N=10000]
#   ONLY=replay runs part 2 alone; LOG=info KEEP_LOG=file keeps the replaying webhook's log.
# Needs: wrk, curl. Prints the figures at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
N=${N:-10000}
BIN=${BINARIES_FROM:-target/release}
SECRET=bench-hook-secret
WEBSITE_ID=42286ab3-b29a-4fde-8538-da0ae501d825
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet -p bench
target/release/bench-stubs --ports-file "$WORK/ports" >"$WORK/stubs.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [[ -s $WORK/ports ]] && break; sleep 0.02; done
# shellcheck disable=SC1090
source "$WORK/ports"
PORT=$(target/release/bench-drive free-port)

start_webhook() {
  env -i "PATH=$PATH" WEBHOOK_SECRET=$SECRET CRISP_TOKEN_IDENTIFIER=bench-id CRISP_TOKEN_KEY=bench-key \
    WEBSITE_ID=$WEBSITE_ID CRISP_API_BASE_URL=http://127.0.0.1:$CRISP_PORT/v1 OPENAI_API_KEY=sk-bench \
    OPENAI_BASE_URL=http://127.0.0.1:$LLM_PORT/v1 BIND_ADDR=127.0.0.1:$PORT DATA_DIR=$WORK/data \
    EVENT_DATA_PATH=$WORK/event_data.txt MAX_CONCURRENT_REPLIES=64 HISTORY_TURNS=0 RUST_LOG=${LOG:-warn} INBOX_MAX_MESSAGES=1000000 \
    "$BIN/webhook" >"$WORK/webhook.log" 2>&1 &
  WEBHOOK_PID=$!
  PIDS+=("$WEBHOOK_PID")
  for _ in $(seq 500); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && return; sleep 0.02; done
  echo "the webhook did not start" >&2
  exit 1
}
figures() { # wrk output: req/s p50 p99 non-2xx
  awk '/^Requests\/sec:/ {r=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {n=$NF}
       END {printf "%s req/s, p50 %s, p99 %s, non-2xx %s\n", r, p50, p99, (n==""?0:n)}' "$1"
}

if [[ ${ONLY:-} != replay ]]; then
echo "== 1. acknowledgement, $SECS s, 32 connections"
start_webhook
HOOK="http://127.0.0.1:$PORT/crisp/hooks?key=$SECRET"
wrk -t2 -c32 -d2s "http://127.0.0.1:$PORT/health" >/dev/null
wrk -t2 -c32 --latency "-d${SECS}s" "http://127.0.0.1:$PORT/health" >"$WORK/health.wrk"
HOOK_BODY=tests/fixtures/crisp/message-received-operator-echo.json \
  wrk -t2 -c32 --latency "-d${SECS}s" -s bench/hook.lua "$HOOK" >"$WORK/echo.wrk"
WEBSITE_ID=$WEBSITE_ID wrk -t2 -c32 --latency "-d${SECS}s" -s bench/inbox.lua "$HOOK" >"$WORK/visitor.wrk"
echo "/health:               $(figures "$WORK/health.wrk")"
echo "operator echo:         $(figures "$WORK/echo.wrk")"
echo "visitor message (new): $(figures "$WORK/visitor.wrk")"
kill "$WEBHOOK_PID"
wait "$WEBHOOK_PID" 2>/dev/null || true
fi

echo "== 2. replay of $N recorded messages at start"
rm -rf "$WORK/data"
mkdir -p "$WORK/data"
python3 - "$WORK/data/inbox.journal" "$N" "$WEBSITE_ID" <<'EOF'
import json, sys, time
path, n, website = sys.argv[1], int(sys.argv[2]), sys.argv[3]
now = int(time.time() * 1000)
with open(path, "w") as f:
    for i in range(n):
        entry = {"id": i + 1, "accepted_at_ms": now, "message": {"website_id": website,
                 "session_id": f"session_replay_{i}", "content": f"bench-replay {i}",
                 "fingerprint": 1_000_000 + i, "timestamp": None}}
        f.write("A " + json.dumps(entry, separators=(",", ":")) + "\n")
EOF
curl -sf -X POST "http://127.0.0.1:$CRISP_PORT/_reset" >/dev/null
started=$(date +%s.%N)
start_webhook
answered=0
for _ in $(seq 6000); do
  answered=$(curl -sf "http://127.0.0.1:$PORT/metrics" |
    awk -F' ' '/^messages_settled_total\{outcome="answered"\}/ {print int($2)}' || true)
  [[ ${answered:-0} -ge $N ]] && break
  sleep 0.05
done
ended=$(date +%s.%N)
echo "replay: $answered of $N answered in $(echo "$ended - $started" | bc) s (start included)"
echo "journal after: $(wc -c <"$WORK/data/inbox.journal") bytes"
[[ -n ${KEEP_LOG:-} ]] && cp "$WORK/webhook.log" "$KEEP_LOG"
