-- wrk script: POST the Crisp hook body from $HOOK_BODY (default: the operator echo fixture,
-- which the webhook acknowledges without any background work).
local path = os.getenv("HOOK_BODY") or "tests/fixtures/crisp/message-received-operator-echo.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- No response() callback: it would make wrk parse every body and slow the client down;
-- wrk's own "Non-2xx or 3xx responses" line counts refusals (run.sh checks it is absent).
