-- common.lua: shared by the scenario scripts. done() prints one line
-- "BENCHJSON {...}" with the counts and latency percentiles (ms) that
-- bench/run.sh parses; wrk's own text output stays as it is.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_s\":%.3f,\"rps\":%.1f,\"bytes\":%d," ..
    "\"errors_connect\":%d,\"errors_read\":%d,\"errors_write\":%d,\"errors_status\":%d," ..
    "\"errors_timeout\":%d,\"mean_ms\":%.4f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f," ..
    "\"p999_ms\":%.4f,\"max_ms\":%.4f,\"curve\":[",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
  local pts = {10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99}
  for i, p in ipairs(pts) do
    io.write(string.format("%s[%g,%.4f]", i > 1 and "," or "", p, latency:percentile(p) / 1000))
  end
  io.write("]}\n")
end
