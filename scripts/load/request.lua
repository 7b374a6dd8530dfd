-- wrk script for scripts/load.sh: POSTs one JSON-RPC message over and over and checks every
-- answer. Set by the environment:
--   LOAD_BODY    the request body (required)
--   LOAD_TOKEN   a bearer token (optional; sent to every arm so the requests are the same)
--   LOAD_STATUS  the expected HTTP status (default 200)
--   LOAD_EXPECT  text the answer must contain (optional)
--   LOAD_REJECT  text the answer must not contain (optional)
-- done() prints "checked N unexpected M", M counting answers that miss any of these.

local body = os.getenv("LOAD_BODY") or error("LOAD_BODY is not set")
local token = os.getenv("LOAD_TOKEN") or ""
local expect_status = tonumber(os.getenv("LOAD_STATUS") or "200")
local expect = os.getenv("LOAD_EXPECT") or ""
local reject = os.getenv("LOAD_REJECT") or ""

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    checked = 0
    unexpected = 0
    first_unexpected = ""
end

function response(status, headers, answer)
    checked = checked + 1
    local ok = status == expect_status
    if ok and expect ~= "" and not answer:find(expect, 1, true) then ok = false end
    if ok and reject ~= "" and answer:find(reject, 1, true) then ok = false end
    if not ok then
        unexpected = unexpected + 1
        if first_unexpected == "" then
            first_unexpected = status .. " " .. answer:sub(1, 200):gsub("%s+", " ")
        end
    end
end

function done(summary, latency, requests)
    local total, bad, first = 0, 0, ""
    for _, thread in ipairs(threads) do
        total = total + thread:get("checked")
        bad = bad + thread:get("unexpected")
        local f = thread:get("first_unexpected")
        if first == "" and f ~= nil then first = f end
    end
    io.write(string.format("checked %d unexpected %d\n", total, bad))
    if first ~= "" then io.write("first unexpected: " .. first .. "\n") end
end
