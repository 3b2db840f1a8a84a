-- armdb.policy.engine: the policies the C engine carries out, set on the
-- collection's store with armdb_tune (store:tune).
--
--   compaction = { threshold = 0.3, window = { "01:00", "05:00" },
--                  bytes_per_sec = 50e6 }
--       threshold      a file is compacted once this share of it is
--                      reclaimable (default 0.3)
--       bytes_per_sec  a budget for compaction I/O, bytes read and written
--                      (0 or absent: none)
--       window         local times of day [from, to) (it may wrap past
--                      midnight): outside it the background thread
--                      compacts nothing (a pass under way stops at its next
--                      entry), inside it compacts as usual. The window is
--                      opened and closed by the "compaction:<name>" task
--                      (policy.tasks) each time it runs, and set once when
--                      the policy is applied; without a scheduler it stays
--                      as it was then. coll:compact() runs at any time: it
--                      is asked for.
--       compaction = false   back to the defaults: threshold 0.3, no
--                      budget, no window.
--   sync = "none" | "interval" | "always", sync_interval_ms = n
--       the store's durability (see armdb.h, DURABILITY), at once.
--
-- A read-only database has nothing to tune: these are ignored there.
local M = {}

M.WINDOW_EVERY = 60 -- seconds between looks at the window

local function policy()
    return require("armdb.policy")
end

-- Is minute m of the day inside window w ({ from, to } in minutes)?
function M.inside(w, m)
    if w[1] < w[2] then
        return m >= w[1] and m < w[2]
    end
    return m >= w[1] or m < w[2]
end

local function raw_of(coll)
    local s = coll._store
    return rawget(s, "_raw") or s
end

-- Open or close the window of coll now. true, or nil, message, code.
local function window_now(coll, P)
    local c = P.compaction
    if not (c and c.window) then
        return true
    end
    local open = M.inside(c.window, policy().minute_of_day(policy().now()))
    if P.window_open == open then
        return true
    end
    local ok, msg, code = raw_of(coll):tune({ auto_compact = open })
    if ok then
        P.window_open = open
    end
    return ok, msg, code
end

-- Apply the engine's fields of f (checked) to coll. true, or nil,
-- message, code.
function M.apply(coll, P, f)
    local t = {}
    if f.compaction ~= nil then
        local c = f.compaction
        if c == false then
            t.compaction_threshold, t.compact_bytes_per_sec = 0, 0
            if P.compaction and P.compaction.window then
                t.auto_compact = true
            end
            P.compaction = nil
        else
            t.compaction_threshold = c.threshold or 0
            t.compact_bytes_per_sec = c.bytes_per_sec or 0
            if not c.window and P.compaction and P.compaction.window then
                t.auto_compact = true -- the window is gone: compact at any time
            end
            P.compaction = c
        end
        P.window_open = nil
    end
    if f.sync ~= nil then
        t.sync = f.sync
        P.sync = f.sync
    end
    if f.sync_interval_ms ~= nil then
        t.sync_interval_ms = f.sync_interval_ms
        P.sync_interval_ms = f.sync_interval_ms
    end
    if next(t) then
        local ok, msg, code = raw_of(coll):tune(t)
        if not ok then
            return nil, msg, code
        end
    end
    return window_now(coll, P)
end

-- The window task of coll.
function M.task(coll, P)
    return {
        name = "compaction:" .. coll.name,
        every = M.WINDOW_EVERY,
        step = function()
            if coll._store == nil or coll._policy ~= P then
                return true
            end
            window_now(coll, P)
            return true
        end,
    }
end

M.window_now = window_now
return M
