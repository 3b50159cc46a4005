-- wrk script: POST /v1/verify of one key (with a method and path for the policy, unless
-- the third argument is "auth-only"); prints one JSON line of figures when done.
-- Usage: wrk -s verify.lua URL -- <key secret> [path] [auth-only]
function init(args)
  local key = args[1]
  local path = args[2] or "/chat/send-message"
  if args[3] == "auth-only" then
    body = string.format('{"key":"%s"}', key)
  else
    body = string.format('{"key":"%s","method":"POST","path":"%s"}', key, path)
  end
end

function request()
  return wrk.format("POST", "/v1/verify", { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
