-- wrk script: a new visitor message per request, each in a conversation of its own (a unique
-- session and fingerprint per thread and request), so every hook is recorded in the inbox
-- journal before its 200.
local counter = 0
local thread_id = 0
local website = os.getenv("WEBSITE_ID") or "42286ab3-b29a-4fde-8538-da0ae501d825"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local session = string.format("session_inbox_%d_%d", tid or 0, counter)
  local body = string.format(
    '{"website_id":"%s","event":"message:send","data":{"website_id":"%s","session_id":"%s",'
      .. '"type":"text","content":"bench-inbox %d","from":"user","origin":"chat","fingerprint":%d}}',
    website, website, session, counter, (tid or 0) * 1000000000 + counter)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

