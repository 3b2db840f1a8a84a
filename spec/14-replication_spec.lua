-- Replication: a database served on loopback and followed into another
-- directory of the same process (writes of every kind arrive, the replica
-- refuses its own, both sides' stats), secrets (matching, wrong, too
-- short), a replica reopened later, `armdb status`, and `armdb replicate
-- serve` / `follow` as child processes stopped by SIGTERM.
local armdb = require("armdb")
local cjson = require("cjson")

local helpers = require("helpers")
local q, read_file, write_file, exists = helpers.q, helpers.read_file, helpers.write_file, helpers.exists
local tmpdir, defer, raised = helpers.tmpdir, helpers.defer, helpers.raised
local sh, run, ARMDB = helpers.sh, helpers.run_armdb, helpers.ARMDB

local codes = armdb.codes
local SECRET = "correct horse battery staple"
local FAST = { retry_min_ms = 50, retry_max_ms = 200 } -- a follower that retries at once

-- Poll fn (no sleeping in hope: the condition is checked) until it
-- returns a true value, for at most ms; raises naming what otherwise.
local function eventually(what, fn, ms)
    local deadline = os.time() + math.ceil((ms or 5000) / 1000) + 1
    while true do
        local r = fn()
        if r then
            return r
        end
        if os.time() > deadline then
            error("timed out waiting for " .. what, 2)
        end
        sh("sleep 0.02")
    end
end

local function with(t, more)
    local o = {}
    for k, v in pairs(t or {}) do
        o[k] = v
    end
    for k, v in pairs(more or {}) do
        o[k] = v
    end
    return o
end

-- A leader database with users (u64 -> json) and events (ordered u32 ->
-- raw), closed when the test ends. (A leader sends what is durable: the
-- default sync mode makes writes so within 50 ms.)
local function leader(dir, opts)
    local db = assert(armdb.open(dir, with({ shards = 2 }, opts)))
    defer(function() db:close() end)
    local users = assert(db:collection("users", { key = "u64", value = "json" }))
    local events = assert(db:collection("events", { key = "u32", value = "raw", ordered = true }))
    return db, users, events
end

local function follow(dir, addr, opts)
    local r, msg, code = armdb.open(dir, with(FAST, with(opts, { follow = addr })))
    if r then
        defer(function() r:close() end)
    end
    return r, msg, code
end

-- Every pair of a collection, as a table.
local function contents(coll)
    local t = {}
    for k, v in coll:pairs() do
        t[k] = v
    end
    return t
end

describe("db:serve_replication() and armdb.open(dir, { follow })", function()
    it("copies puts, overwrites, deletes and batches, before and after the replica connects", function()
        local tmp = tmpdir()
        local db, users, events = leader(tmp .. "/l")
        for i = 1, 300 do
            assert(users:put(i, { name = "u" .. i }))
            assert(events:put(i, string.rep("e", i % 40)))
        end
        for i = 1, 300, 7 do
            assert(users:put(i, { name = "again" .. i })) -- overwrites
        end
        for i = 2, 300, 5 do
            assert(users:delete(i))
        end
        local srv = assert(db:serve_replication())
        assert.matches("^127%.0%.0%.1:%d+$", srv.addr)
        assert.are.equal(tonumber(srv.addr:match(":(%d+)$")), srv:port())
        local r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r.read_only)
        assert.are.same({ "events", "users" }, assert(r:collections()))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        local ru, re = assert(r:collection("users")), assert(r:collection("events"))
        assert.are.same(contents(users), contents(ru))
        assert.are.same(contents(events), contents(re))
        assert.are.equal(users:count(), ru:count())
        assert.is_nil(ru:get(2))
        assert.are.same({ name = "again8" }, ru:get(8))
        -- live writes, and a batch across both collections
        assert(users:put(1000, { name = "live" }))
        assert(users:delete(8))
        assert(db:batch(function(b)
            b:put("users", 1001, { name = "batch" })
            b:delete("events", 3)
            b:put("events", 1002, "batched")
        end))
        assert(db:batch(function(b)
            b:put(events, 1003, "one store")
        end))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert.are.same({ name = "live" }, ru:get(1000))
        assert.is_nil(ru:get(8))
        assert.are.same({ name = "batch" }, ru:get(1001))
        assert.is_nil(re:get(3))
        assert.are.equal("batched", re:get(1002))
        assert.are.equal("one store", re:get(1003))
        assert.are.same(contents(users), contents(ru))
        assert.are.same(contents(events), contents(re))
        -- a collection created on the leader after the replica opened
        local late = assert(db:collection("late", { key = "u32", value = "number" }))
        assert(late:put(7, 49))
        local rl = assert(r:collection("late"))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert.are.equal(49, rl:get(7))
    end)

    it("gets the writes of a leader that syncs only when asked (it makes what it sends durable itself)",
        function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l", { sync = "none" })
        assert(users:put(1, { before = true }))
        local srv = assert(db:serve_replication())
        local r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert(users:put(2, { after = true })) -- once the replica is live
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert.are.same({ after = true }, assert(r:collection("users")):get(2))
    end)

    it("refuses writes on the replica, saying it is one", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        assert(users:put(1, { a = 1 }))
        local srv = assert(db:serve_replication())
        local r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        local ru = assert(r:collection("users"))
        local ok, msg, code = ru:put(2, { b = 2 })
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.are.equal("store " .. tmp .. "/f/users is a replica of store users at " .. srv.addr
            .. ": it takes writes only from its leader", msg)
        ok, msg, code = ru:delete(1)
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.matches("is a replica of store users", msg, 1, true)
        ok, msg, code = r:batch(function(b) b:put("users", 3, {}) end)
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.are.equal("database " .. tmp .. "/f is a replica of " .. srv.addr .. ": write on the leader", msg)
        ok, msg, code = r:collection("new", { key = "u32", value = "raw" })
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.matches("create it on the leader", msg, 1, true)
        -- nothing of those reached the replica; reads go on
        assert.are.same({ a = 1 }, ru:get(1))
        assert.is_nil(ru:get(2))
        assert.are.equal(1, ru:count())
        -- a replica is not served
        ok, msg, code = r:serve_replication()
        assert.is_nil(ok)
        assert.are.equal(codes.INVAL, code)
        assert.matches("is a replica", msg, 1, true)
    end)

    it("shows the follower's position and lag on both sides", function()
        local tmp = tmpdir()
        local db, users, events = leader(tmp .. "/l")
        local srv = assert(db:serve_replication())
        local st = assert(srv:stats())
        assert.are.same({ 0, 0, {} }, { st.followers, st.accepted, st.peers })
        for i = 1, 50 do
            assert(users:put(i, { i = i }))
        end
        assert(events:put(1, "x"))
        local r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        local last = db:last_gsns()
        -- the leader sees each store's follower acknowledge all of it
        st = eventually("the acknowledgements", function()
            local s = assert(srv:stats())
            local n = 0
            for _, p in ipairs(s.peers) do
                if p.state == "live" and p.acked_gsn == last[p.store] then
                    n = n + 1
                end
            end
            return n == 2 and s
        end)
        assert.are.equal(2, st.followers)
        assert.are.equal(0, st.refused)
        assert.are.equal(0, st.failed)
        assert.is_nil(st.last_error)
        assert.are.same({ "events", "users" }, { st.peers[1].store, st.peers[2].store })
        local pu = st.peers[2]
        assert.matches("^127%.0%.0%.1:%d+$", pu.addr)
        assert.are.equal(last.users, pu.sent_gsn)
        assert.are.same({ 0, 0 }, { pu.lag_gsn, pu.lag_ms })
        assert.are.equal(50, pu.entries)
        assert.is_true(pu.bytes > 50 * 8)
        assert.is_true(pu.connected_ms >= 0)
        -- the replica's side
        local rs = assert(r:replication())
        local u = rs.users
        assert.are.equal("live", u.state)
        assert.are.equal(last.users, u.applied_gsn)
        assert.are.equal(last.users, u.leader_gsn)
        assert.are.equal(0, u.lag_gsn)
        assert.are.equal(50, u.entries)
        assert.are.equal(1, u.connects)
        assert.are.equal(0, u.resyncs)
        assert.are.equal(srv.addr, u.leader)
        assert.is_nil(u.last_error)
        assert.is_true(u.last_contact_ms < 5000)
        assert.are.equal(last.events, rs.events.applied_gsn)
        -- a leader that moved on, heard by the replica: lag, then none
        assert(users:put(51, { i = 51 }))
        assert.is_true(r:wait_replica(nil, 5000)) -- up to the leader's GSN as last heard
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        u = assert(r:replication()).users
        assert.are.equal(u.leader_gsn - u.applied_gsn, u.lag_gsn)
        assert.are.equal(51, u.entries)
    end)

    it("gives up waiting when the leader's GSN is not reached in time", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        assert(users:put(1, {}))
        local srv = assert(db:serve_replication())
        local r = assert(follow(tmp .. "/f", srv.addr))
        local ok, msg, code = r:wait_replica({ users = db:last_gsns().users + 1000 }, 100)
        assert.is_nil(ok)
        assert.are.equal(-110, code) -- -ETIMEDOUT
        assert.matches("^collection users: replica .* GSN %d+ not applied within 100 ms", msg)
        assert.matches("wait_replica: targets must be a table", raised(r.wait_replica, r, 5, 100), 1, true)
        assert.matches("not a replica", raised(db.wait_replica, db, nil, 100), 1, true)
        assert.is_nil(db:replication())
    end)

    it("continues where it was when reopened, applying only what is new", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        for i = 1, 200 do
            assert(users:put(i, { i = i }))
        end
        local srv = assert(db:serve_replication())
        local r = assert(armdb.open(tmp .. "/f", with(FAST, { follow = srv.addr })))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert.are.equal(200, assert(r:replication()).users.entries)
        assert(r:close())
        for i = 201, 210 do
            assert(users:put(i, { i = i }))
        end
        assert(users:delete(1))
        assert(users:delete(2))
        r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        local ru = assert(r:collection("users"))
        assert.are.equal(users:count(), ru:count())
        assert.are.equal(208, ru:count())
        assert.are.same(contents(users), contents(ru))
        assert.are.equal(12, assert(r:replication()).users.entries)
    end)

    it("goes on with the catalog it has while its leader is unreachable; a new one is not made", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        assert(users:put(1, { a = 1 }))
        local srv = assert(db:serve_replication())
        local addr = srv.addr
        local r = assert(armdb.open(tmp .. "/f", with(FAST, { follow = addr })))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert(r:close())
        assert(srv:close())
        r = assert(follow(tmp .. "/f", addr))
        assert.are.same({ a = 1 }, assert(r:collection("users")):get(1))
        local st = eventually("a failed connection", function()
            local t = assert(r:replication()).users
            return t.last_error and t
        end)
        assert.are.equal("connecting", st.state)
        assert.matches("cannot connect", st.last_error, 1, true)
        local none, msg, code = armdb.open(tmp .. "/g", { follow = addr })
        assert.is_nil(none)
        assert.are.equal(-111, code) -- -ECONNREFUSED
        assert.matches("^replica " .. tmp .. "/g: fetching the catalog of the leader at " .. addr .. ": ", msg)
        assert.is_false(exists(tmp .. "/g"))
    end)

    it("works with a matching secret, and refuses a wrong one or none", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        for i = 1, 20 do
            assert(users:put(i, { i = i }))
        end
        local srv = assert(db:serve_replication(nil, { secret = SECRET }))
        local r = assert(follow(tmp .. "/ok", srv.addr, { secret = SECRET }))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert.are.equal(20, assert(r:collection("users")):count())
        -- a database replica with the wrong secret gets no catalog
        local bad, msg, code = armdb.open(tmp .. "/bad", { follow = srv.addr, secret = SECRET .. "!" })
        assert.is_nil(bad)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("secrets differ", msg, 1, true)
        bad, msg, code = armdb.open(tmp .. "/none", { follow = srv.addr })
        assert.is_nil(bad)
        assert.are.equal(codes.BADKEY, code)
        assert.matches("shared secret", msg, 1, true)
        -- a raw store with the wrong secret: it keeps trying, applies nothing
        local s = assert(armdb.store(tmp .. "/raw", with(FAST, { follow = srv.addr, name = "users",
            secret = string.rep("x", 16), key_len = 8, shards = 2 })))
        defer(function() s:close() end)
        local st = eventually("the refusal", function()
            local t = assert(s:replication())
            return t.last_error and t
        end)
        assert.matches("secrets differ", st.last_error, 1, true)
        assert.are.equal(codes.BADKEY, st.last_error_code)
        assert.are.equal("connecting", st.state)
        assert.are.equal(0, st.connects) -- no connection got past the handshake
        assert.are.equal(0, st.entries)
        assert.are.equal(0, st.applied_gsn)
        assert.are.equal(0, s:count())
        local ls = assert(srv:stats())
        assert.is_true(ls.refused >= 3)
        assert.matches("secret", ls.last_error, 1, true)
    end)

    it("raises on a secret shorter than 16 bytes and on bad options, naming them", function()
        local tmp = tmpdir()
        local db = leader(tmp .. "/l")
        assert.are.equal("armdb: serve_replication: option secret must be 16..1024 bytes, got 5 bytes",
            raised(db.serve_replication, db, nil, { secret = "short" }))
        assert.are.equal("armdb: serve_replication: unknown option retry_min_ms",
            raised(db.serve_replication, db, nil, { retry_min_ms = 5 }))
        assert.are.equal("armdb: serve_replication: option heartbeat_ms must be a whole number 0..4294967295,"
            .. " got -1", raised(db.serve_replication, db, nil, { heartbeat_ms = -1 }))
        assert.are.equal("armdb: serve_replication: addr must be a string (HOST:PORT), got number",
            raised(db.serve_replication, db, 5))
        assert.are.equal("armdb.open: option secret must be 16..1024 bytes, got 5 bytes",
            raised(armdb.open, tmp .. "/f", { follow = "127.0.0.1:1", secret = "short" }))
        assert.are.equal('armdb.open: option secret is for a replica (give follow = "HOST:PORT")',
            raised(armdb.open, tmp .. "/f", { secret = SECRET }))
        assert.are.equal("armdb.open: option follow cannot go with read_only (a replica takes its leader's writes)",
            raised(armdb.open, tmp .. "/f", { follow = "127.0.0.1:1", read_only = true }))
        assert.are.equal("armdb.store: option secret must be 16..1024 bytes, got 3 bytes",
            raised(armdb.store, tmp .. "/s", { follow = "127.0.0.1:1", secret = "abc", key_len = 4 }))
        -- and the C library's own refusal: a non-loopback address without a secret
        local srv, msg, code = db:serve_replication("0.0.0.0:0")
        assert.is_nil(srv)
        assert.are.equal(codes.INVAL, code)
        assert.matches("secret", msg, 1, true)
        assert.is_false(exists(tmp .. "/f"))
    end)

    it("starts over when the leader compacted its position away, exchanging the handle once no scan holds it",
        function()
        local tmp = tmpdir()
        local function key(i)
            return string.format("%04d", i)
        end
        local s = assert(armdb.store(tmp .. "/l", { key_len = 4, shards = 1, max_file_size = 65536,
            no_auto_compact = true }))
        defer(function() s:close() end)
        for i = 1, 100 do
            assert(s:put(key(i), string.rep("v", 100)))
        end
        local srv = assert(s:serve_replication(nil, { name = "s" }))
        local ropts = with(FAST, { follow = srv.addr, name = "s", key_len = 4, shards = 1 })
        local f = assert(armdb.store(tmp .. "/f", ropts))
        assert.is_true(f:wait_replica(s:last_gsn(), 5000))
        assert(f:close())
        -- deletes the replica has not seen, then dropped by compaction
        for i = 1, 100 do
            assert(s:delete(key(i)))
        end
        for _ = 1, 5 do
            for i = 101, 400 do
                assert(s:put(key(i), string.rep("w", 200)))
            end
        end
        assert(s:sync())
        assert(s:compact())
        f = assert(armdb.store(tmp .. "/f", ropts))
        defer(function() f:close() end)
        local nxt = f:pairs() -- holds the old handle: the exchange waits for it
        local st = eventually("the copy", function()
            local t = assert(f:replication())
            return t.state == "swap" and t
        end, 10000)
        assert.are.same({ 1, 0 }, { st.resyncs, st.swaps })
        assert.are.equal(100, f:count()) -- the old store, stale, still serves reads
        assert.are.equal(string.rep("v", 100), f:get(key(1)))
        local n = 0
        for _ in nxt do
            n = n + 1
        end
        assert.are.equal(100, n)
        -- the scan is over: the next call puts the copy in place
        assert.are.equal(300, f:count())
        assert.is_nil(f:get(key(1)))
        assert.are.equal(string.rep("w", 200), f:get(key(400)))
        st = assert(f:replication())
        assert.are.same({ 1, 1 }, { st.resyncs, st.swaps })
        assert.is_nil(st.swap_error)
        assert.is_true(f:wait_replica(s:last_gsn(), 5000))
        assert(s:put(key(401), "after"))
        assert.is_true(f:wait_replica(s:last_gsn(), 5000))
        assert.are.equal("after", f:get(key(401)))
        assert.is_false(exists(tmp .. "/f.resync/ARMDB"))
        assert.are.equal(1, assert(srv:stats()).resyncs)
    end)

    it("serves a raw store to a raw replica, and closes followers and servers before stores", function()
        local tmp = tmpdir()
        local s = helpers.store_with(tmp .. "/raw", { aaaa = "1", bbbb = "2" })
        defer(function() s:close() end)
        local srv = assert(s:serve_replication(nil, { name = "things" }))
        local f = assert(armdb.store(tmp .. "/copy", with(FAST, { follow = srv.addr, name = "things", key_len = 4,
            shards = 2 })))
        assert.is_true(f:is_replica())
        assert.is_false(s:is_replica())
        assert.is_true(f:wait_replica(s:last_gsn(), 5000))
        assert.are.equal("2", f:get("bbbb"))
        assert(s:put("cccc", "3"))
        assert.is_true(f:wait_replica(s:last_gsn(), 5000))
        assert.are.equal("3", f:get("cccc"))
        local ok, _, code = f:put("dddd", "4")
        assert.is_nil(ok)
        assert.are.equal(codes.READONLY, code)
        assert.is_nil(s:replication())
        -- closing the leader's store closes its server first
        assert(s:close())
        assert.is_false(srv:is_open())
        assert.matches("is closed", raised(srv.stats, srv), 1, true)
        assert(srv:close()) -- a no-op now
        local st = eventually("the follower to notice", function()
            local t = assert(f:replication())
            return t.state == "connecting" and t
        end)
        assert.are.equal("connecting", st.state)
        assert(f:close())
        assert(f:close())
        assert.matches("is closed", raised(f.replication, f), 1, true)
    end)
end)

describe("armdb status", function()
    it("prints the role, the last GSN and the status files of leader and replica", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        for i = 1, 30 do
            assert(users:put(i, { i = i }))
        end
        local srv = assert(db:serve_replication())
        local r = assert(follow(tmp .. "/f", srv.addr))
        assert.is_true(r:wait_replica(db:last_gsns(), 5000))
        assert(db:sync()) -- (status opens the stores read-only: it sees what is on disk)
        local last = db:last_gsns().users
        -- (the library writes the status files about once a second)
        eventually("the status files", function()
            local rf = exists(tmp .. "/f/users/REPLICA") and read_file(tmp .. "/f/users/REPLICA")
            local lf = exists(tmp .. "/l/users/REPLICATION") and read_file(tmp .. "/l/users/REPLICATION")
            return rf and rf:find("\nstate live\n", 1, true) and rf:find("\ndurable_gsn " .. last .. "\n", 1, true)
                and lf and lf:find("acked_gsn=" .. last, 1, true)
        end)
        local out, err, code = run(tmp, { "status", tmp .. "/l" })
        assert.are.same({ "", 0 }, { err, code })
        assert.matches("\n%[users%] role leader\n%[users%] running yes\n%[users%] last_gsn " .. last .. "\n", out)
        assert.matches("[users] replication role leader\n", out, 1, true)
        assert.matches("%[users%] replication follower 127%.0%.0%.1:%d+ state=live sent_gsn=%d+ acked_gsn=" .. last,
            out)
        assert.matches("^%[events%] role leader\n", out)
        out, err, code = run(tmp, { "status", tmp .. "/f" })
        assert.are.same({ "", 0 }, { err, code })
        assert.matches("\n%[users%] role follower\n%[users%] running yes\n%[users%] last_gsn " .. last .. "\n", out)
        assert.matches("[users] replica leader " .. srv.addr .. "\n", out, 1, true)
        assert.matches("[users] replica state live\n", out, 1, true)
        out, err, code = run(tmp, { "status", "--json", tmp .. "/f" })
        assert.are.same({ "", 0 }, { err, code })
        local t = cjson.decode(out)
        assert.are.equal("follower", t.users.role)
        assert.is_true(t.users.running)
        assert.are.equal(last, t.users.last_gsn)
        assert.are.equal(last, t.users.replica.applied_gsn)
        assert.are.equal("live", t.users.replica.state)
        assert.are.equal(2, #t.users.replica.shard)
        out, err, code = run(tmp, { "status", "--json", tmp .. "/l/users" })
        assert.are.same({ "", 0 }, { err, code })
        t = cjson.decode(out)
        assert.are.equal("leader", t.role)
        assert.are.equal(1, #t.replication.follower)
        -- a store that neither serves nor follows
        local plain = helpers.store_with(tmp .. "/plain", { abcd = "x" })
        local gsn = plain:last_gsn()
        plain:close()
        out, err, code = run(tmp, { "status", tmp .. "/plain" })
        assert.are.same({ "role none\nrunning no\nlast_gsn " .. gsn .. "\n", "", 0 }, { out, err, code })
    end)
end)

describe("armdb replicate", function()
    -- Start `armdb ARGS...` in the background: its pid (the process
    -- itself, through exec), and the files of its stdout, stderr and exit
    -- status.
    local function spawn(tmp, args)
        local parts = { q(ARMDB) }
        for _, a in ipairs(args) do
            parts[#parts + 1] = q(a)
        end
        local inner = "echo $$ >" .. q(tmp .. "/pid") .. "; exec " .. table.concat(parts, " ")
        local cmd = "( sh -c " .. q(inner) .. " >" .. q(tmp .. "/out") .. " 2>" .. q(tmp .. "/err")
            .. " </dev/null; echo $? >" .. q(tmp .. "/rc.tmp") .. "; mv " .. q(tmp .. "/rc.tmp") .. " "
            .. q(tmp .. "/rc") .. " ) >/dev/null 2>&1 & true"
        assert.are.equal(0, sh(cmd))
        local pid = eventually("the child's pid", function()
            local p = exists(tmp .. "/pid") and read_file(tmp .. "/pid"):match("%d+")
            return p
        end)
        defer(function()
            if not exists(tmp .. "/rc") then
                sh("kill -9 " .. pid .. " 2>/dev/null")
            end
        end)
        return pid
    end

    local function stop(tmp, pid)
        assert.are.equal(0, sh("kill -TERM " .. pid))
        return tonumber(eventually("the child to exit", function()
            return exists(tmp .. "/rc") and read_file(tmp .. "/rc")
        end, 10000))
    end

    local function secret_file(tmp)
        write_file(tmp .. "/secret", SECRET .. "\n")
        assert.are.equal(0, sh("chmod 600 " .. q(tmp .. "/secret")))
        return tmp .. "/secret"
    end

    it("follow: a child process follows a leader of this process, and stops cleanly on SIGTERM", function()
        local tmp = tmpdir()
        local db, users, events = leader(tmp .. "/l")
        for i = 1, 100 do
            assert(users:put(i, { i = i }))
        end
        assert(events:put(5, "five"))
        local srv = assert(db:serve_replication(nil, { secret = SECRET }))
        local pid = spawn(tmp, { "replicate", "follow", srv.addr, tmp .. "/f", "--secret-file", secret_file(tmp) })
        local last = db:last_gsns()
        eventually("the child to catch up", function()
            local n = 0
            for _, p in ipairs(assert(srv:stats()).peers) do
                if p.acked_gsn == last[p.store] then
                    n = n + 1
                end
            end
            return n == 2
        end)
        assert.are.equal(0, stop(tmp, pid))
        assert.are.equal("following " .. srv.addr .. " into " .. tmp .. "/f\n", read_file(tmp .. "/out"))
        local err = read_file(tmp .. "/err")
        assert.matches("[users] live applied " .. last.users, err, 1, true)
        assert.matches("armdb: SIGTERM: stopped following " .. srv.addr .. "\n$", err)
        -- closed cleanly: the copy opens (it is no longer locked) and is whole
        local r = assert(armdb.open(tmp .. "/f", { read_only = true }))
        defer(function() r:close() end)
        assert.are.same(contents(users), contents(assert(r:collection("users"))))
        assert.are.equal("five", assert(r:collection("events")):get(5))
    end)

    it("serve: a child process serves a database until SIGTERM", function()
        local tmp = tmpdir()
        local db, users = leader(tmp .. "/l")
        for i = 1, 40 do
            assert(users:put(i, { i = i }))
        end
        local last = db:last_gsns()
        assert(db:close())
        local pid = spawn(tmp, { "replicate", "serve", tmp .. "/l", "--secret-file", secret_file(tmp) })
        local addr = eventually("the address", function()
            return exists(tmp .. "/out") and read_file(tmp .. "/out"):match("^serving .* on (127%.0%.0%.1:%d+)\n")
        end)
        local r = assert(follow(tmp .. "/f", addr, { secret = SECRET }))
        assert.is_true(r:wait_replica(last, 5000))
        assert.are.equal(40, assert(r:collection("users")):count())
        assert.are.equal(0, stop(tmp, pid))
        assert.matches("armdb: SIGTERM: stopped serving " .. tmp .. "/l\n$", read_file(tmp .. "/err"))
        -- the replica notices the leader is gone, and keeps its reads
        eventually("the replica to notice", function()
            return assert(r:replication()).users.state == "connecting"
        end)
        assert.are.same({ i = 7 }, assert(r:collection("users")):get(7))
    end)

    it("refuses a secret file that group or others can read, and a short secret", function()
        local tmp = tmpdir()
        write_file(tmp .. "/secret", SECRET .. "\n")
        assert.are.equal(0, sh("chmod 644 " .. q(tmp .. "/secret")))
        local out, err, code = run(tmp, { "replicate", "follow", "127.0.0.1:1", tmp .. "/f", "--secret-file",
            tmp .. "/secret" })
        assert.are.same({ "", 1 }, { out, code })
        assert.are.equal("armdb: --secret-file " .. tmp .. "/secret is readable by group or others (mode 644): chmod"
            .. " 600 " .. tmp .. "/secret\n", err)
        write_file(tmp .. "/short", "abc\n")
        assert.are.equal(0, sh("chmod 600 " .. q(tmp .. "/short")))
        out, err, code = run(tmp, { "replicate", "follow", "127.0.0.1:1", tmp .. "/f", "--secret-file",
            tmp .. "/short" })
        assert.are.same({ "", "armdb: --secret-file " .. tmp .. "/short holds 3 bytes: a secret is 16 to 1024 bytes\n",
            1 }, { out, err, code })
        -- a secret the leader does not share
        local db = leader(tmp .. "/l")
        local srv = assert(db:serve_replication(nil, { secret = string.rep("s", 16) }))
        out, err, code = run(tmp, { "replicate", "follow", srv.addr, tmp .. "/f", "--secret-file",
            secret_file(tmp) })
        assert.are.same({ "", 1 }, { out, code })
        assert.matches("^armdb: replica " .. tmp .. "/f: fetching the catalog of the leader at .*secrets differ", err)
        out, err, code = run(tmp, { "replicate", "elsewhere" })
        assert.are.same({ "", "armdb: replicate needs serve or follow, got elsewhere (see armdb help replicate)\n",
            2 }, { out, err, code })
        assert.is_false(exists(tmp .. "/f"))
    end)
end)
