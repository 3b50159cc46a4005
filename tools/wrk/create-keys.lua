-- wrk script: durable key creations. POST /v1/admin/api-keys with a name unique per thread
-- and request; prints one JSON line of figures when done.
-- Usage: wrk -s create-keys.lua URL -- <admin secret> [name prefix]
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  token = args[1]
  prefix = args[2] or "bench"
  counter = 0
  status_bad = 0
end

function request()
  counter = counter + 1
  local body = string.format('{"name":"%s-%d-%d","role":"basic"}', prefix, id, counter)
  return wrk.format("POST", "/v1/admin/api-keys",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= 201 then status_bad = status_bad + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("status_bad") or 0) end
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"non_2xx":%d,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
