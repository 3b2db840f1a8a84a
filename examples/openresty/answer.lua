-- answer: how the handlers of this example (kv.lua, sessions.lua,
-- counters.lua) reply: a line of text, a JSON document, or an armdb
-- failure (500, with armdb's message both in the body and in the error
-- log at level error).
local cjson = require("cjson.safe")

local ngx = ngx -- luacheck: ignore 113 (the global of OpenResty)

local M = {}

function M.respond(status, content_type, body, headers)
    ngx.status = status
    ngx.header["Content-Type"] = content_type
    for name, value in pairs(headers or {}) do
        ngx.header[name] = value
    end
    ngx.say(body)
    return ngx.exit(ngx.HTTP_OK)
end

function M.text(status, line, headers)
    return M.respond(status, "text/plain; charset=utf-8", line, headers)
end

function M.json(status, t, headers)
    local body, err = cjson.encode(t)
    if not body then
        return M.text(ngx.HTTP_INTERNAL_SERVER_ERROR, "cannot encode the answer as JSON: " .. tostring(err))
    end
    return M.respond(status, "application/json", body, headers)
end

-- armdb failed: 500 "armdb: WHAT KEY: MESSAGE (code CODE)" (key
-- percent-encoded, or left out when nil), logged too.
function M.fail(what, key, msg, code)
    local line = string.format("armdb: %s%s: %s (code %s)", what, key and " " .. ngx.escape_uri(key) or "",
        tostring(msg), tostring(code))
    ngx.log(ngx.ERR, line)
    return M.text(ngx.HTTP_INTERNAL_SERVER_ERROR, line)
end

return M
