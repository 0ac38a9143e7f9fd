-- wrk script for bench/serve_load.py: POSTs the JPEG named by $JPEG as multipart field "file"
-- to every connection, counts status codes, and prints one "WRK {json}" line at the end.
local f = assert(io.open(os.getenv("JPEG"), "rb"))
local jpeg = f:read("*a")
f:close()
local boundary = "marinelife-serve-load"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
  .. "Content-Type: image/jpeg\r\n\r\n" .. jpeg .. "\r\n--" .. boundary .. "--\r\n"

local threads = {}
function setup(thread) table.insert(threads, thread) end

codes = {}
function response(status, headers, body)
  local key = tostring(status)
  codes[key] = (codes[key] or 0) + 1
end

function done(summary, latency, requests)
  local total, parts = {}, {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("codes")) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do table.insert(parts, string.format('"%s": %d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
      .. '"codes": {%s}, "transport_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), table.concat(parts, ", "), e.connect + e.read + e.write + e.timeout))
end
