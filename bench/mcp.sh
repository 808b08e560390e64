#!/usr/bin/env bash
# MCP benchmark: signed `tools/call get_visitor_activity` (Hugo's call) against the release
# webhook, file store under a temporary DATA_DIR holding the visitor's 50 actions and a summary,
# Crisp's REST API stood in by bench-stubs (the conversation's session data links it to
# ps_bench_0). wrk, WRK_CONNS connections (default 32) for WRK_SECS (default 10); prints p50/p99.
#
# Usage (from the repo root): cargo build --release && bench/mcp.sh
# Needs: wrk, curl, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
WRK_SECS=${WRK_SECS:-10}
WRK_CONNS=${WRK_CONNS:-32}
WEBSITE=42286ab3-b29a-4fde-8538-da0ae501d825
SECRET=mcp_sec_bench_0123456789
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

target/release/bench-stubs --ports-file "$WORK/ports" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/ports" ] && break; sleep 0.05; done
# shellcheck disable=SC1091
. "$WORK/ports"

# The store, written in its own format: sessions/<first 16 bytes of sha256(id), hex>.jsonl.
mkdir -p "$WORK/data/sessions" "$WORK/data/users" "$WORK/data/conversations"
FILE="$WORK/data/sessions/$(printf '%s' ps_bench_0 | sha256sum | cut -c1-32).jsonl"
NOW=$(date +%s)
for i in $(seq 0 49); do
  printf '{"k":"action","a":{"title":"Click button %d","description":"User clicked button %d on the reports page","canonical_url":"https://app.example.com/reports/%d","index":%d,"type":"click","timestamp_start":%d.0,"timestamp_end":%d.5,"raw_url":"https://app.example.com/reports/%d?tab=2"}}\n' \
    "$i" "$i" "$i" "$i" $((NOW - 300 + i)) $((NOW - 300 + i)) "$i" >>"$FILE"
done
printf '{"k":"summary","s":"The user opened the reports and clicked through the export buttons."}\n' >>"$FILE"

PORT=$((20000 + RANDOM % 20000))
env -i PATH="$PATH" WEBHOOK_SECRET=bench CRISP_TOKEN_IDENTIFIER=id CRISP_TOKEN_KEY=key WEBSITE_ID=$WEBSITE \
  CRISP_API_BASE_URL="http://127.0.0.1:$CRISP_PORT/v1" OPENAI_API_KEY=sk-bench \
  OPENAI_BASE_URL="http://127.0.0.1:$LLM_PORT/v1" DATA_DIR="$WORK/data" BIND_ADDR="127.0.0.1:$PORT" \
  MCP_SIGNING_SECRET=$SECRET RUST_LOG=warn target/release/webhook >"$WORK/webhook.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.05; done

export MCP_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_visitor_activity","arguments":{}}}'
export MCP_WEBSITE=$WEBSITE MCP_SESSION=session_bench_0 MCP_TS=$NOW
MCP_SIG="sha256=$(printf '%s.%s.%s' "$MCP_TS" "$MCP_WEBSITE" "$MCP_BODY" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)"
export MCP_SIG
# One call first: it must answer with the visitor's activity (and warms the session-data cache).
ANSWER=$(curl -fsS "http://127.0.0.1:$PORT/mcp" -H 'Content-Type: application/json' \
  -H 'Accept: application/json, text/event-stream' -H "X-Crisp-Website-Id: $MCP_WEBSITE" \
  -H "X-Crisp-Timestamp: $MCP_TS" -H "X-Crisp-Signature: $MCP_SIG" -H "X-Crisp-Session-Id: $MCP_SESSION" \
  -d "$MCP_BODY")
case "$ANSWER" in
*"Click button 49"*) ;;
*) echo "unexpected answer: $ANSWER" >&2; exit 1 ;;
esac
echo "answer: ${#ANSWER} bytes"
wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -s bench/mcp.lua "http://127.0.0.1:$PORT/mcp" | tee "$WORK/wrk.txt"
