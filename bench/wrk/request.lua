-- One request shape for every scenario, set by environment variables:
--   BENCH_METHOD  GET or POST             BENCH_TOKEN  a bearer token, or empty
--   BENCH_PATH    the path and query      BENCH_TYPE   the body's Content-Type
--   BENCH_BODY    the body; each {n} becomes a number unique to this request
--                 (every POSTed message differs), each {u} a number from 1 to
--   BENCH_USERS   (so logins rotate over the users user1, user2, ...)
--   BENCH_SENDERS "token path token path ...": each request takes the next
--                 pair, in turn, instead of BENCH_TOKEN and BENCH_PATH
-- done() prints one JSON line that bench/run.py reads.
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local token = os.getenv("BENCH_TOKEN") or ""
local content_type = os.getenv("BENCH_TYPE") or "application/json"
local users = tonumber(os.getenv("BENCH_USERS") or "1")
local counter = 0
local senders = {}
for token_, path_ in (os.getenv("BENCH_SENDERS") or ""):gmatch("(%S+) (%S+)") do
  senders[#senders + 1] = {token_, path_}
end

function request()
  counter = counter + 1
  local headers = {}
  local this_token, this_path = token, path
  if #senders > 0 then
    local sender = senders[counter % #senders + 1]
    this_token, this_path = sender[1], sender[2]
  end
  if this_token ~= "" then
    headers["Authorization"] = "Bearer " .. this_token
  end
  local payload = nil
  if body then
    headers["Content-Type"] = content_type
    payload = body:gsub("{n}", tostring(counter)):gsub("{u}", tostring(counter % users + 1))
  end
  return wrk.format(method, this_path, headers, payload)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"bad_status": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
