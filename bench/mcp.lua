-- wrk script for bench/mcp.sh: the same signed `tools/call get_visitor_activity` on every
-- request (the signature covers the body and a timestamp valid for 300 s, made by the script).
wrk.method = "POST"
wrk.body = os.getenv("MCP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["X-Crisp-Website-Id"] = os.getenv("MCP_WEBSITE")
wrk.headers["X-Crisp-Timestamp"] = os.getenv("MCP_TS")
wrk.headers["X-Crisp-Signature"] = os.getenv("MCP_SIG")
wrk.headers["X-Crisp-Session-Id"] = os.getenv("MCP_SESSION")

local errors = 0
function response(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("MCP requests=%d non2xx=%d p50_ms=%.3f p99_ms=%.3f req_per_s=%.0f\n",
    summary.requests, summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6)))
end
