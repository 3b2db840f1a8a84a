-- The armdb command: bin/armdb run as a child process against temp stores,
-- its stdout, stderr and exit status checked exactly.
local armdb = require("armdb")

local helpers = require("helpers")
local ROOT, q, read_file, write_file, exists = helpers.ROOT, helpers.q, helpers.read_file, helpers.write_file,
    helpers.exists
local tmpdir, defer = helpers.tmpdir, helpers.defer
local ARMDB = ROOT .. "/bin/armdb"
local LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"

local sh = helpers.sh

-- Run `armdb ARGS...` (stdin from the string `input`, if given; the
-- environment variables of the table `env` set for it): its stdout, stderr
-- and exit status.
local function run_env(tmp, env, args, input)
    return helpers.run_armdb(tmp, args, input, env)
end

local function run(tmp, args, input)
    return helpers.run_armdb(tmp, args, input)
end

-- A raw store at dir with the pairs of t (closed again).
local function make_store(dir, t, opts)
    assert(helpers.store_with(dir, t, opts):close())
end

local function store_contents(dir, key)
    local s = assert(armdb.store(dir, { read_only = true, encryption_key = key }))
    local t = {}
    for k, v in s:pairs() do
        t[k] = v
    end
    s:close()
    return t
end

local function lines_set(text)
    local t = {}
    for line in text:gmatch("[^\n]+") do
        t[#t + 1] = line
    end
    table.sort(t)
    return t
end

describe("armdb help", function()
    it("lists every command with one line each, and the general options", function()
        local tmp = tmpdir()
        local out, err, code = run(tmp, { "--help" })
        assert.equal(0, code)
        assert.equal("", err)
        for _, name in ipairs({ "info", "get", "put", "del", "scan", "dump", "load", "verify", "stats", "compact",
            "rekey", "run", "help" }) do
            assert.truthy(out:find("\n  " .. name .. " +%S"), name)
        end
        assert.truthy(out:find("--version", 1, true))
        assert.truthy(out:find("--key-env NAME", 1, true))
    end)

    it("gives each command's text by `help CMD` and by `CMD --help`", function()
        local tmp = tmpdir()
        for _, name in ipairs({ "info", "get", "put", "del", "scan", "dump", "load", "verify", "stats", "rekey",
            "run" }) do
            local out, err, code = run(tmp, { "help", name })
            assert.equal(0, code)
            assert.equal("", err)
            local head = "Usage: armdb " .. name .. " [OPTIONS] "
            assert.equal(head, out:sub(1, #head))
            local out2 = run(tmp, { name, "--help" })
            assert.equal(out, out2)
        end
        local out = run(tmp, { "help", "scan" })
        assert.truthy(out:find("--limit N", 1, true))
        assert.truthy(out:find("--keys-only", 1, true))
        assert.truthy(out:find("\n  --key-env NAME ", 1, true)) -- every command that opens a DIR
        out = run(tmp, { "help", "rekey" })
        assert.truthy(out:find("armdb rekey DIR --key-env OLD --new-key-env NEW", 1, true))
        assert.truthy(out:find("\n  --new-key-env NAME ", 1, true))
    end)

    it("finds its modules through a symlink, from any working directory", function()
        local tmp = tmpdir()
        assert.equal(0, sh("ln -s " .. q(ARMDB) .. " " .. q(tmp .. "/armdb")))
        local code = sh("cd / && " .. q(tmp .. "/armdb") .. " --version >" .. q(tmp .. "/v") .. " 2>&1")
        assert.equal(0, code)
        -- the library of the checkout, as this process found it (relative to the root here)
        local lib = armdb.library:gsub("^%./", ROOT .. "/")
        assert.equal(string.format("armdb (ABI version %d, library %s)\n", armdb.abi_version, lib),
            read_file(tmp .. "/v"))
    end)

    it("refuses an unknown command, an unknown option and no command with one line and status 2", function()
        local tmp = tmpdir()
        local out, err, code = run(tmp, { "frobnicate" })
        assert.same({ "", "armdb: unknown command frobnicate (see armdb --help)\n", 2 }, { out, err, code })
        out, err, code = run(tmp, { "help", "frobnicate" })
        assert.equal("", out)
        assert.same({ "armdb: unknown command frobnicate (see armdb --help)\n", 2 }, { err, code })
        local _
        _, err, code = run(tmp, { "scan", tmp, "--bogus" })
        assert.same({ "armdb: unknown option --bogus for scan (see armdb help scan)\n", 2 }, { err, code })
        _, err, code = run(tmp, { "get", "-z", tmp, "k" })
        assert.same({ "armdb: unknown option -z (see armdb help get)\n", 2 }, { err, code })
        _, err, code = run(tmp, {})
        assert.same({ "armdb: no command given (see armdb --help)\n", 2 }, { err, code })
        _, err, code = run(tmp, { "get", tmp })
        assert.same({ "armdb: get needs DIR KEY (see armdb help get)\n", 2 }, { err, code })
    end)
end)

describe("armdb on a raw store", function()
    it("info prints key_len, value_len, shards, keys, files and bytes", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "hello", efgh = "world!" }, { shards = 3 })
        local out, err, code = run(tmp, { "info", dir })
        assert.equal("", err)
        assert.equal(0, code)
        local st = store_contents(dir) and armdb.store(dir, { read_only = true }):stats()
        assert.equal(string.format("store %s\nkey_len 4\nvalue_len 0\nshards 3\nencrypted no\nkeys 2\nfiles %d\n"
            .. "bytes %d\n", dir, st.files, st.live_bytes + st.dead_bytes), out)
        assert.is_true(st.live_bytes > 0)
    end)

    it("get prints the value and a newline, -n without it, --hex as hex", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "hello", ["\1\2\3\4"] = "\0\255" })
        assert.same({ "hello\n", "", 0 }, { run(tmp, { "get", dir, "abcd" }) })
        assert.same({ "hello", "", 0 }, { run(tmp, { "get", "-n", dir, "abcd" }) })
        assert.same({ "00ff\n", "", 0 }, { run(tmp, { "get", "--hex", dir, "01020304" }) })
    end)

    it("get of a missing key fails with status 1", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "hello" })
        assert.same({ "", "armdb: abce: not found\n", 1 }, { run(tmp, { "get", dir, "abce" }) })
    end)

    it("put sets a value from the argument, from stdin with -, and from hex", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, {})
        assert.same({ "", "", 0 }, { run(tmp, { "put", dir, "key1", "value one" }) })
        assert.same({ "", "", 0 }, { run(tmp, { "put", dir, "key2", "-" }, "from\nstdin\0\255") })
        assert.same({ "", "", 0 }, { run(tmp, { "put", "--hex", dir, "6b657933", "00ff10" }) })
        assert.same({ key1 = "value one", key2 = "from\nstdin\0\255", key3 = "\0\255\16" }, store_contents(dir))
    end)

    it("del deletes a key; a missing key fails with status 1 and writes nothing", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1", efgh = "2" })
        assert.same({ "", "", 0 }, { run(tmp, { "del", dir, "abcd" }) })
        assert.same({ "", "armdb: abcd: not found\n", 1 }, { run(tmp, { "del", dir, "abcd" }) })
        assert.same({ efgh = "2" }, store_contents(dir))
    end)

    it("refuses a key of the wrong length, and loses nothing", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1" })
        local msg = "armdb: key abc is 3 bytes; store " .. dir .. " has key_len 4\n"
        assert.same({ "", msg, 1 }, { run(tmp, { "get", dir, "abc" }) })
        assert.same({ "", msg, 1 }, { run(tmp, { "put", dir, "abc", "x" }) })
        assert.same({ "", msg, 1 }, { run(tmp, { "del", dir, "abc" }) })
        assert.same({ "", "armdb: key 0102 is 2 bytes; store " .. dir .. " has key_len 4\n", 1 },
            { run(tmp, { "put", "--hex", dir, "0102", "00" }) })
        assert.same({ "", "armdb: key is not hexadecimal (two digits a byte): xyz\n", 2 },
            { run(tmp, { "get", "--hex", dir, "xyz" }) })
        assert.same({ abcd = "1" }, store_contents(dir))
    end)

    it("scan prints key TAB value lines, escaped; --keys-only, --limit and --hex", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "hello", ["a\tb\n"] = "x\\y\0" })
        local out, err, code = run(tmp, { "scan", dir })
        assert.same({ "", 0 }, { err, code })
        assert.same({ "a\\tb\\n\tx\\\\y\\x00", "abcd\thello" }, lines_set(out))
        out = run(tmp, { "scan", "--keys-only", dir })
        assert.same({ "a\\tb\\n", "abcd" }, lines_set(out))
        out = run(tmp, { "scan", "--hex", dir })
        assert.same({ "6109620a\t785c7900", "61626364\t68656c6c6f" }, lines_set(out))
        out = run(tmp, { "scan", dir, "--limit", "1" })
        assert.equal(1, #lines_set(out))
        out = run(tmp, { "scan", dir, "--limit=0" })
        assert.equal("", out)
        assert.same({ "", "armdb: --limit needs a non-negative integer, got -1\n", 2 },
            { run(tmp, { "scan", dir, "--limit", "-1" }) })
    end)

    it("scan takes --from, --to, --prefix and --reverse on an ordered store, in key order", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { aa01 = "1", aa02 = "2", ab01 = "3", ba01 = "4", bb01 = "5" }, { ordered = true, shards = 3 })
        assert.same({ "aa01\t1\naa02\t2\nab01\t3\nba01\t4\nbb01\t5\n", "", 0 }, { run(tmp, { "scan", dir }) })
        assert.same({ "aa02\nab01\n", "", 0 },
            { run(tmp, { "scan", dir, "--keys-only", "--from", "aa02", "--to", "b" }) })
        assert.same({ "ab01\naa02\naa01\n", "", 0 },
            { run(tmp, { "scan", dir, "--keys-only", "--prefix", "a", "--reverse" }) })
        assert.same({ "bb01\n", "", 0 }, { run(tmp, { "scan", dir, "--keys-only", "--reverse", "--limit", "1" }) })
        assert.same({ "61623031\n", "", 0 },
            { run(tmp, { "scan", dir, "--keys-only", "--hex", "--prefix", "6162" }) })
        assert.same({ "", "armdb: --prefix cannot go with --from or --to\n", 2 },
            { run(tmp, { "scan", dir, "--prefix", "a", "--from", "b" }) })
        local plain = tmp .. "/p"
        make_store(plain, { aa01 = "1" })
        local out, err, code = run(tmp, { "scan", plain, "--from", "a" })
        assert.same({ "", 1 }, { out, code })
        assert.matches("need an ordered store %(ARMDB_ORDERED%)", err)
    end)

    it("dump writes JSON lines, hex fields for bytes that are not UTF-8, all hex with --hex", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = 'say "hi"/\n', ["\255\0\1\2"] = "caf\195\169", efgh = "\192\128" })
        local out, err, code = run(tmp, { "dump", dir })
        assert.same({ "", 0 }, { err, code })
        assert.same({
            '{"key":"abcd","value":"say \\"hi\\"/\\n"}',
            '{"key":"efgh","value_hex":"c080"}',
            '{"key_hex":"ff000102","value":"caf\195\169"}',
        }, lines_set(out))
        assert.same({ "", "", 0 }, { run(tmp, { "dump", "--hex", dir, "-o", tmp .. "/d.jsonl" }) })
        assert.same({
            '{"key_hex":"61626364","value_hex":"73617920226869222f0a"}',
            '{"key_hex":"65666768","value_hex":"c080"}',
            '{"key_hex":"ff000102","value_hex":"636166c3a9"}',
        }, lines_set(read_file(tmp .. "/d.jsonl")))
    end)

    it("dump | load copies every pair, binary ones too", function()
        local tmp = tmpdir()
        local a, b = tmp .. "/a", tmp .. "/b"
        local t = { abcd = "text", ["\0\0\0\0"] = "\0\1\2\255", ["\255\254\253\252"] = "", big = nil }
        t.wxyz = string.rep("0123456789", 2000)
        make_store(a, t)
        make_store(b, { keep = "old" })
        local code = sh(q(ARMDB) .. " dump " .. q(a) .. " | " .. q(ARMDB) .. " load " .. q(b)
            .. " 2>" .. q(tmp .. "/e"))
        assert.equal(0, code)
        assert.equal("", read_file(tmp .. "/e"))
        t.keep = "old"
        assert.same(t, store_contents(b))
        -- and from a file, hex-dumped
        local c = tmp .. "/c"
        make_store(c, {})
        assert.same({ "", "", 0 }, { run(tmp, { "dump", "--hex", a, "-o", tmp .. "/d.jsonl" }) })
        assert.same({ "imported 4\nrejected 0\n", "", 0 }, { run(tmp, { "load", c, tmp .. "/d.jsonl" }) })
        t.keep = nil
        assert.same(t, store_contents(c))
    end)

    it("load reports a malformed line by file and line, imports the others and exits 1", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { keep = "old" })
        local file = tmp .. "/bad.jsonl"
        write_file(file, '{"key":"aaaa","value":"1"}\n\n{"key":"bbbb","value":"2"}\n{"key":"cccc",\n'
            .. '{"key":"dddd","value":"4"}\n')
        local out, err, code = run(tmp, { "load", dir, file })
        assert.equal("imported 3\nrejected 1\n", out)
        assert.equal(1, code)
        assert.equal(file .. ":4: malformed JSON: Expected object key string but found T_END at character 15\n"
            .. "armdb: " .. file .. ": 1 of 4 records rejected\n", err)
        assert.same({ keep = "old", aaaa = "1", bbbb = "2", dddd = "4" }, store_contents(dir))
    end)

    it("load names the line of a well-formed line that is not a pair", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { keep = "old" })
        local cases = {
            { '{"key":"abc","value":"1"}', "key of 3 bytes, the store has key_len 4" },
            { '{"key":"abcd"}', 'no "value" or "value_hex"' },
            { '{"value":"x"}', 'no "key" or "key_hex"' },
            { '{"key_hex":"zz","value":"x"}', "key_hex is not hexadecimal (two digits a byte): zz" },
            { '[1,2]', 'no "key" or "key_hex"' },
            { '"text"', "not a JSON object" },
        }
        for _, c in ipairs(cases) do
            local out, err, code = run(tmp, { "load", dir }, '{"key":"aaaa","value":"1"}\n' .. c[1] .. "\n")
            assert.equal(1, code)
            assert.equal("imported 1\nrejected 1\n", out)
            assert.equal("stdin:2: " .. c[2] .. "\narmdb: stdin: 1 of 2 records rejected\n", err)
        end
        assert.same({ keep = "old", aaaa = "1" }, store_contents(dir))
    end)

    it("stats prints the counters as lines, or one JSON object with --json", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1", efgh = "2" }, { shards = 2 })
        local out, err, code = run(tmp, { "stats", dir })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("\nkeys 2\n", 1, true))
        assert.truthy(out:find("\nshards 2\n", 1, true))
        assert.truthy(out:find("\nread_only true\n", 1, true))
        out = run(tmp, { "stats", "--json", dir })
        local st = require("cjson").decode(out)
        assert.equal(2, st.keys)
        assert.equal(4, st.key_len)
        assert.equal(true, st.read_only)
        assert.is_string(st.io_backend)
    end)

    it("compact rewrites the files of overwritten keys, keeps every value and reports what it did", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local s = assert(armdb.store(dir, { key_len = 4, shards = 2, max_file_size = 65536, no_auto_compact = true }))
        local want = {}
        for round = 1, 8 do
            for i = 1, 200 do
                local k = string.format("%04d", i)
                want[k] = string.rep(string.char(65 + round), 300) .. k
                assert(s:put(k, want[k]))
            end
        end
        assert(s:close())
        local out, err, code = run(tmp, { "compact", dir })
        assert.same({ "", 0 }, { err, code })
        local f = {}
        for name, v in out:gmatch("(%S+) (%d+)\n") do
            f[name] = tonumber(v)
        end
        assert.is_true(f.files_compacted > 0)
        assert.is_true(f.bytes_reclaimed > 0)
        assert.is_true(f.disk_after < f.disk_before)
        assert.equal(f.disk_before - f.disk_after, f.bytes_reclaimed)
        assert.same(want, store_contents(dir))
    end)

    it("compact of a store another process writes fails with status 1 and touches nothing", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1" })
        local s = assert(armdb.store(dir))
        defer(function() s:close() end)
        local out, err, code = run(tmp, { "compact", dir })
        assert.equal("", out)
        assert.equal(1, code)
        assert.truthy(err:find("pid", 1, true), err)
        assert.equal("1", s:get("abcd"))
    end)

    it("verify checks every entry of every file and exits 0 on a clean store", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "12345", efgh = "678" })
        -- two shards: a file and its hint each; entries of 32 and 24 bytes
        assert.same({ "entries 2\nfiles 2\nbytes 56\npages 0\nhints 2\ndamaged_entries 0\ndamaged_pages 0\n"
            .. "damaged_hints 0\nshort_files 0\nunread_files 0\ncorrupt_entries 0\ntorn_bytes 0\nok\n", "", 0 },
            { run(tmp, { "verify", dir }) })
    end)

    it("verify finds a flipped byte in a data file and exits 1", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local payload = string.rep("Z", 300)
        -- Three entries, the middle one damaged: the scan reads past it.
        make_store(dir, { aaaa = "first", abcd = payload, zzzz = "last" }, { shards = 1 })
        local data = dir .. "/000/00000001.data"
        local bytes = read_file(data)
        local at = assert(bytes:find(payload, 1, true))
        local f = assert(io.open(data, "r+b"))
        f:seek("set", at + 100)
        f:write("Y")
        f:close()
        local out, err, code = run(tmp, { "verify", dir })
        assert.equal(1, code)
        assert.equal("armdb: damage found in " .. dir .. "\n", err)
        assert.truthy(out:find("\ndamaged\n$"))
        assert.falsy(out:find("\nok\n", 1, true))
        assert.truthy(out:find("^entries 2\nfiles 1\n"))
        assert.truthy(out:find("\ndamaged_entries 1\n", 1, true))
        -- the entry: 16 bytes of header and 4 of key before the value
        local entry = at - 1 - 16 - 4
        assert.truthy(out:find("\ndamage " .. data .. ": offset " .. entry .. ": 320 bytes are not an intact entry",
            1, true), out)
    end)

    it("run gives the script the opened store and its arguments, and closes the store", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1" })
        local script = tmp .. "/job.lua"
        write_file(script, [[
local s, key, value = ...
assert(s:put(key, value))
io.write(s:count(), " ", tostring(s:is_open()), " ", type(rawget(_G, "s")), "\n")
return 7
]])
        assert.same({ "2 true nil\n", "", 7 }, { run(tmp, { "run", script, dir, "efgh", "two" }) })
        assert.same({ abcd = "1", efgh = "two" }, store_contents(dir))
        -- closed: a writer can open it again at once
        local s = assert(armdb.store(dir))
        s:close()
    end)

    it("run exits 1 with the script's error message, and closes the store", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1" })
        local script = tmp .. "/bad.lua"
        write_file(script, 'local s = ...\nassert(s:put("wxyz", "9"))\nerror("no more")\n')
        assert.same({ "", "armdb: " .. script .. ":3: no more\n", 1 }, { run(tmp, { "run", script, dir }) })
        assert.same({ abcd = "1", wxyz = "9" }, store_contents(dir))
        write_file(script, "error({})\n")
        local _, err, code = run(tmp, { "run", script, dir })
        assert.equal(1, code)
        assert.truthy(err:find("^armdb: " .. script:gsub("%p", "%%%0") .. ": table: 0x%x+\n$"))
        assert.same({ "", "armdb: cannot open " .. tmp .. "/none.lua: No such file or directory\n", 1 },
            { run(tmp, { "run", tmp .. "/none.lua", dir }) })
    end)
end)

describe("armdb progress bar", function()
    local have_script = sh("command -v script >/dev/null 2>&1") == 0
    local it_tty = have_script and it or pending

    it_tty("is drawn on stderr when it is a terminal, and not when it is piped", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "1", efgh = "2" })
        -- script(1) gives the command a terminal for stdout and stderr
        local code = sh("script -qc " .. q(q(ARMDB) .. " verify " .. q(dir)) .. " /dev/null >" .. q(tmp .. "/tty")
            .. " 2>&1")
        assert.equal(0, code)
        local text = read_file(tmp .. "/tty")
        assert.truthy(text:find("\rverify [" .. string.rep("#", 30) .. "] 100% 2", 1, true))
        assert.truthy(text:find("entries 2", 1, true))
        assert.same({ "entries 2\nfiles 2\nbytes 48\npages 0\nhints 2\ndamaged_entries 0\ndamaged_pages 0\n"
            .. "damaged_hints 0\nshort_files 0\nunread_files 0\ncorrupt_entries 0\ntorn_bytes 0\nok\n", "", 0 },
            { run(tmp, { "verify", dir }) })
    end)
end)

describe("armdb bad directories", function()
    it("names a missing directory, a file and a directory that is not a store", function()
        local tmp = tmpdir()
        assert.same({ "", "armdb: no such directory: " .. tmp .. "/none\n", 1 },
            { run(tmp, { "info", tmp .. "/none" }) })
        write_file(tmp .. "/file", "x")
        assert.same({ "", "armdb: not a directory: " .. tmp .. "/file\n", 1 },
            { run(tmp, { "get", tmp .. "/file", "abcd" }) })
        for _, cmd in ipairs({ { "info" }, { "put", "abcd", "v" }, { "dump" }, { "verify" } }) do
            local args = { cmd[1], tmp }
            for i = 2, #cmd do
                args[#args + 1] = cmd[i]
            end
            assert.same({ "", "armdb: " .. tmp .. " is not an armdb store or database (it has no ARMDB or"
                .. " CATALOG file)\n", 1 }, { run(tmp, args) })
        end
    end)
end)

-- Start a child luajit that runs `open` (Lua with `armdb` and `dir` in
-- scope, holding DIR for writing), reports its pid, and waits until the
-- test ends (or a file is written at the path returned second), then runs
-- `close`. Returns the child's pid, as text, and that path.
local function start_writer(tmp, dir, open, close)
    local script = tmp .. "/writer.lua"
    write_file(script, 'local armdb = require("armdb")\nlocal ffi = require("ffi")\n'
        .. 'ffi.cdef("int getpid(void);")\nlocal dir, ready, stop = ...\n' .. open .. [[
local f = assert(io.open(ready .. ".tmp", "w"))
f:write(ffi.C.getpid())
f:close()
os.rename(ready .. ".tmp", ready)
for _ = 1, 400 do
    local g = io.open(stop, "r")
    if g then
        g:close()
        break
    end
    os.execute("sleep 0.05")
end
]] .. close .. "\n")
    local ready, stop = tmp .. "/ready", tmp .. "/stop"
    defer(function()
        write_file(stop, "")
        sh("sleep 0.2")
    end)
    sh("(LUA_PATH=" .. q(LUA_PATH) .. " luajit " .. q(script) .. " " .. q(dir) .. " " .. q(ready) .. " "
        .. q(stop) .. " >/dev/null 2>&1 &)")
    for _ = 1, 200 do
        if exists(ready) then
            break
        end
        sh("sleep 0.05")
    end
    assert.is_true(exists(ready), "the writer did not start")
    return read_file(ready), stop
end

describe("armdb beside a writer process", function()
    it("reads a store another process holds for writing; a write names the holder's pid", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        make_store(dir, { abcd = "before" })
        local pid, stop = start_writer(tmp, dir, [[
local s = assert(armdb.store(dir))
assert(s:put("efgh", "from the writer"))
assert(s:sync())
]], "s:close()")

        assert.same({ "before\n", "", 0 }, { run(tmp, { "get", dir, "abcd" }) })
        assert.same({ "from the writer\n", "", 0 }, { run(tmp, { "get", dir, "efgh" }) })
        local out, err, code = run(tmp, { "scan", "--keys-only", dir })
        assert.same({ { "abcd", "efgh" }, "", 0 }, { lines_set(out), err, code })
        assert.equal(0, select(3, run(tmp, { "info", dir })))
        assert.equal(0, select(3, run(tmp, { "verify", dir })))
        assert.equal(0, select(3, run(tmp, { "dump", dir })))

        local locked = "armdb: store " .. dir .. " is locked by pid " .. pid
            .. ": store is locked by another writer process\n"
        assert.same({ "", locked, 1 }, { run(tmp, { "put", dir, "wxyz", "x" }) })
        assert.same({ "", locked, 1 }, { run(tmp, { "del", dir, "abcd" }) })
        assert.same({ "", locked, 1 }, { run(tmp, { "load", dir }, '{"key":"wxyz","value":"x"}\n') })

        write_file(stop, "")
        for _ = 1, 200 do
            if sh("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then
                break
            end
            sh("sleep 0.05")
        end
        assert.same({ abcd = "before", efgh = "from the writer" }, store_contents(dir))
    end)
end)

describe("armdb on a database", function()
    -- A database made by hand (a CATALOG and one store per collection), so
    -- these tests do not depend on the collections layer.
    local function make_db(dir)
        sh("mkdir -p " .. q(dir))
        write_file(dir .. "/CATALOG", '{"format":1,"collections":{'
            .. '"users":{"key":"u64","value":"json","key_len":8,"value_len":0},'
            .. '"scores":{"key":"string(4)","value":"number","key_len":4,"value_len":8}}}')
        local u = assert(armdb.store(dir .. "/users", { key_len = 8, shards = 1 }))
        assert(u:put("\0\0\0\0\0\0\0\1", '{"name":"ann"}'))
        assert(u:put("\0\0\0\0\0\0\0\2", '{"name":"bob"}'))
        u:close()
        local sc = assert(armdb.store(dir .. "/scores", { key_len = 4, value_len = 8, shards = 1 }))
        sc:close()
    end

    it("info lists the collections with their codecs and counts", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        make_db(dir)
        assert.same({ "database " .. dir .. "\ncollections 2\n  scores\tkey string(4)\tvalue number\tkeys 0"
            .. "\tencrypted no\n  users\tkey u64\tvalue json\tkeys 2\tencrypted no\n", "", 0 },
            { run(tmp, { "info", dir }) })
        local out, err, code = run(tmp, { "info", dir .. "/users" })
        assert.same({ "", 0 }, { err, code })
        assert.equal("collection users of database " .. dir .. "\nkey u64\nvalue json\nkey_len 8\nvalue_len 0\n",
            out:match("^(.-shards)"):sub(1, -7))
        assert.truthy(out:find("\nkeys 2\n", 1, true))
    end)

    it("verify and stats cover every collection", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        make_db(dir)
        local out, err, code = run(tmp, { "verify", dir })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^%[scores%] entries 0\n%[scores%] files %d+\n"), out)
        assert.truthy(out:find("\n%[scores%] ok\n%[users%] entries 2\n%[users%] files %d+\n"), out)
        assert.truthy(out:find("\n%[users%] damaged_entries 0\n", 1), out)
        assert.truthy(out:find("\n%[users%] ok\n$"), out)
        out = run(tmp, { "verify", "--json", dir })
        local v = require("cjson").decode(out)
        assert.same({ 0, 2, true, true }, { v.scores.entries, v.users.entries, v.users.ok, v.scores.ok })
        out, err, code = run(tmp, { "stats", "--json", dir })
        assert.same({ "", 0 }, { err, code })
        local st = require("cjson").decode(out)
        assert.equal(2, st.users.keys)
        assert.equal(0, st.scores.keys)
        assert.equal(8, st.scores.value_len)
    end)

    it("scan of an ordered collection takes --from and --to per the key codec", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local db = assert(armdb.open(dir, { sync = "none" }))
        local c = assert(db:collection("nums", { key = "u64", value = "number", ordered = true }))
        for _, i in ipairs({ 100, 9, 10, 2, 1000 }) do
            assert(c:put(i, i * 2))
        end
        db:close()
        assert.same({ "9\t18\n10\t20\n100\t200\n", "", 0 },
            { run(tmp, { "scan", dir .. "/nums", "--from", "3", "--to", "1000" }) })
        assert.same({ "1000\n100\n", "", 0 },
            { run(tmp, { "scan", dir, "-c", "nums", "--keys-only", "--reverse", "--from", "11" }) })
        assert.same({ "", "armdb: key ten is not a decimal integer (the key codec of nums is u64)\n", 2 },
            { run(tmp, { "scan", dir .. "/nums", "--from", "ten" }) })
    end)

    it("commands that take keys need a collection", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        make_db(dir)
        assert.same({ "", "armdb: " .. dir .. " is a database: name a collection as " .. dir .. "/NAME or with"
            .. " -c NAME (see armdb help get)\n", 2 }, { run(tmp, { "get", dir, "1" }) })
        assert.same({ "", "armdb: no collection nope in database " .. dir .. "\n", 1 },
            { run(tmp, { "get", "-c", "nope", dir, "1" }) })
        assert.same({ "", "armdb: --hex is for raw stores; " .. dir .. "/users is a collection (its codecs give"
            .. " the text form)\n", 2 }, { run(tmp, { "scan", "--hex", dir .. "/users" }) })
    end)

    local have_db = exists(ROOT .. "/lua/armdb/db.lua")
    local it_db = have_db and it or pending

    it_db("get, put, del and scan parse and print keys and values by the collection's codecs", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local db = assert(armdb.open(dir))
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        assert(users:put(1, { name = "ann" }))
        assert(db:collection("scores", { key = "string(4)", value = "number" }))
        db:close()
        assert.same({ '{"name":"ann"}\n', "", 0 }, { run(tmp, { "get", dir .. "/users", "1" }) })
        assert.same({ '{"name":"ann"}\n', "", 0 }, { run(tmp, { "get", "-c", "users", dir, "1" }) })
        assert.same({ "", "", 0 }, { run(tmp, { "put", dir .. "/users", "2", '{"name":"bob"}' }) })
        assert.same({ "", "", 0 }, { run(tmp, { "put", "-c", "scores", dir, "ann", "2.5" }) })
        assert.same({ "", "armdb: value is not valid JSON: Expected object key string but found invalid token"
            .. " at character 2\n", 1 }, { run(tmp, { "put", dir .. "/users", "3", "{oops" }) })
        assert.same({ "", "armdb: key x is not a decimal integer (the key codec of users is u64)\n", 2 },
            { run(tmp, { "get", dir .. "/users", "x" }) })
        local out = run(tmp, { "scan", dir .. "/users" })
        assert.same({ '1\t{"name":"ann"}', '2\t{"name":"bob"}' }, lines_set(out))
        assert.same({ "ann\t2.5\n", "", 0 }, { run(tmp, { "scan", dir .. "/scores" }) })
        assert.same({ "", "", 0 }, { run(tmp, { "del", dir .. "/users", "1" }) })
        assert.same({ "", "armdb: 1: not found\n", 1 }, { run(tmp, { "get", dir .. "/users", "1" }) })
    end)

    it_db("dump | load round-trips a collection", function()
        local tmp = tmpdir()
        local a, b = tmp .. "/a", tmp .. "/b"
        for _, d in ipairs({ a, b }) do
            local db = assert(armdb.open(d))
            assert(db:collection("users", { key = "u64", value = "json" }))
            db:close()
        end
        local db = assert(armdb.open(a))
        local users = assert(db:collection("users"))
        assert(users:put(7, { name = "ann", tags = { "x" } }))
        assert(users:put(9, { n = 1.5 }))
        db:close()
        local cjson = require("cjson")
        local function decoded(text)
            local t = {}
            for line in text:gmatch("[^\n]+") do
                local o = cjson.decode(line)
                t[o.key] = o.value
            end
            return t
        end
        local out = run(tmp, { "dump", a .. "/users" })
        assert.truthy(out:find('{"key":9,"value":{"n":1.5}}\n', 1, true))
        assert.same({ [7] = { name = "ann", tags = { "x" } }, [9] = { n = 1.5 } }, decoded(out))
        assert.same({ "imported 2\nrejected 0\n", "", 0 }, { run(tmp, { "load", "-c", "users", b }, out) })
        assert.same(decoded(out), decoded((run(tmp, { "dump", b .. "/users" }))))
    end)

    it_db("refuses a key its codec refuses with status 2, and writes nothing", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local db = assert(armdb.open(dir))
        assert(db:collection("ids", { key = "uuid", value = "raw" }))
        db:close()
        local msg = 'armdb: codec uuid: "nope" is not a uuid (8-4-4-4-12 hex digits)\n'
        assert.same({ "", msg, 2 }, { run(tmp, { "put", dir .. "/ids", "nope", "x" }) })
        assert.same({ "", msg, 2 }, { run(tmp, { "get", dir .. "/ids", "nope" }) })
        local id = "123e4567-e89b-12d3-a456-426614174000"
        assert.same({ "", "", 0 }, { run(tmp, { "put", dir .. "/ids", id, "\1bin" }) })
        assert.same({ id .. "\t\\x01bin\n", "", 0 }, { run(tmp, { "scan", dir .. "/ids" }) })
        local other = id:gsub("0$", "1")
        assert.same({ "", "armdb: " .. other .. ": not found\n", 1 }, { run(tmp, { "del", dir .. "/ids", other }) })
    end)

    it_db("writes to a collection another process holds name the holder; reads work", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local pid, stop = start_writer(tmp, dir, [[
local db = assert(armdb.open(dir))
local users = assert(db:collection("users", { key = "u64", value = "json" }))
assert(users:put(1, { name = "ann" }))
assert(db:sync())
]], "db:close()")
        assert.same({ '{"name":"ann"}\n', "", 0 }, { run(tmp, { "get", dir .. "/users", "1" }) })
        assert.same({ "", "armdb: store " .. dir .. "/users is locked by pid " .. pid
            .. ": store is locked by another writer process\n", 1 },
            { run(tmp, { "put", dir .. "/users", "2", "{}" }) })
        write_file(stop, "")
    end)

    it_db("run gives the script a collection for a collection directory", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local db = assert(armdb.open(dir))
        assert(assert(db:collection("users", { key = "u64", value = "json" })):put(3, { x = 1 }))
        db:close()
        local script = tmp .. "/job.lua"
        write_file(script, 'local users = ...\nio.write(users.name, " ", users:count(), " ", users:get(3).x, "\\n")\n')
        assert.same({ "users 1 1\n", "", 0 }, { run(tmp, { "run", script, dir .. "/users" }) })
    end)

    it_db("run gives the script the opened database", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        local db = assert(armdb.open(dir))
        assert(db:collection("users", { key = "u64", value = "json" }))
        db:close()
        local script = tmp .. "/job.lua"
        write_file(script, 'local db, n = ...\nlocal u = db:collection("users")\n'
            .. 'assert(u:put(tonumber(n), { ok = true }))\nio.write(u:count(), "\\n")\n')
        assert.same({ "1\n", "", 0 }, { run(tmp, { "run", script, dir, "5" }) })
        assert.same({ '{"ok":true}\n', "", 0 }, { run(tmp, { "get", dir .. "/users", "5" }) })
    end)
end)

describe("armdb with encryption keys", function()
    local codecs = require("armdb.codecs")
    local KEY_A_HEX = string.rep("0f1e2d3c4b5a6978", 4)
    local KEY_A = codecs.from_hex(KEY_A_HEX)
    local KEY_B = "raw key, thirty-two bytes long.!" -- the raw form
    assert(#KEY_B == 32)
    local KEY_C_HEX = string.rep("c3", 32)
    local ENV = { KA = KEY_A_HEX, KB = KEY_B, KC = KEY_C_HEX, SHORT = "0123456789abcdef",
        NOTHEX = string.rep("g", 64), EMPTY = "" }
    local SECRETS = { KEY_A_HEX, KEY_A, KEY_B, codecs.to_hex(KEY_B), KEY_C_HEX, codecs.from_hex(KEY_C_HEX),
        ENV.SHORT, ENV.NOTHEX }

    -- run_env with the keys in ENV; no key, in any form, is in the output.
    local function run_k(tmp, args, input)
        local out, err, code = run_env(tmp, ENV, args, input)
        for _, secret in ipairs(SECRETS) do
            assert.is_nil(out:find(secret, 1, true), "a key in stdout of " .. table.concat(args, " "))
            assert.is_nil(err:find(secret, 1, true), "a key in stderr of " .. table.concat(args, " "))
        end
        return out, err, code
    end

    local function pattern(s)
        return (s:gsub("%p", "%%%0"))
    end

    local function enc_store(dir, key, t, opts)
        opts = opts or {}
        opts.encryption_key = key
        make_store(dir, t, opts)
    end

    -- A database of two collections, encrypted with key.
    local function enc_db(dir, key)
        local db = assert(armdb.open(dir, { encryption_key = key, sync = "none" }))
        local users = assert(db:collection("users", { key = "u64", value = "json" }))
        local notes = assert(db:collection("notes", { key = "string(4)", value = "raw", ordered = true }))
        for i = 1, 50 do
            assert(users:put(i, { n = i }))
        end
        assert(notes:put("aaaa", "first"))
        assert(notes:put("bbbb", "second"))
        assert(db:close())
    end

    -- The dumps of enc_db's collections, read with the key in env.
    local function enc_dumps(tmp, dir, env)
        local t = {}
        for _, name in ipairs({ "users", "notes" }) do
            t[name] = run_k(tmp, { "dump", dir .. "/" .. name, "--key-env", env })
        end
        return t
    end

    -- After a rotation from KA to KB: KA opens no collection of enc_db's,
    -- and KB reads what KA did before.
    local function check_rotated(tmp, dir, before)
        for _, name in ipairs({ "users", "notes" }) do
            assert.same({ "", "armdb: wrong key for store " .. dir .. "/" .. name .. " (the key in --key-env KA)\n",
                1 }, { run_k(tmp, { "dump", dir .. "/" .. name, "--key-env", "KA" }) })
        end
        assert.same(before, enc_dumps(tmp, dir, "KB"))
    end

    it("put, get, scan, dump, info and verify read and write an encrypted raw store with --key-env", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        enc_store(dir, KEY_A, { abcd = "hello" })
        assert.same({ "", "", 0 }, { run_k(tmp, { "put", "--key-env", "KA", dir, "efgh", "world" }) })
        assert.same({ "", "", 0 }, { run_k(tmp, { "put", "--key-env=KA", dir, "wxyz", "-" }, "from stdin") })
        assert.same({ abcd = "hello", efgh = "world", wxyz = "from stdin" }, store_contents(dir, KEY_A))
        assert.same({ "hello\n", "", 0 }, { run_k(tmp, { "get", dir, "abcd", "--key-env", "KA" }) })
        local out, err, code = run_k(tmp, { "scan", dir, "--key-env", "KA" })
        assert.same({ "", 0 }, { err, code })
        assert.same({ "abcd\thello", "efgh\tworld", "wxyz\tfrom stdin" }, lines_set(out))
        out, err, code = run_k(tmp, { "dump", dir, "--key-env", "KA" })
        assert.same({ "", 0 }, { err, code })
        assert.equal(3, #lines_set(out))
        local s = assert(armdb.store(dir, { read_only = true, encryption_key = KEY_A }))
        local st = s:stats()
        s:close()
        assert.same({ string.format("store %s\nkey_len 4\nvalue_len 0\nshards 2\nencrypted yes\n"
            .. "cipher xchacha20-poly1305\nkeys 3\nfiles %d\nbytes %d\n", dir, st.files,
            st.live_bytes + st.dead_bytes), "", 0 }, { run_k(tmp, { "info", dir, "--key-env", "KA" }) })
        out, err, code = run_k(tmp, { "verify", dir, "--key-env", "KA" })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^entries 3\nfiles %d+\nbytes %d+\npages [1-9]%d*\n"), out)
        assert.truthy(out:find("\ndamaged_pages 0\n", 1, true), out)
        assert.truthy(out:find("\nok\n$"), out)
        -- A key given raw (32 bytes) works as well as 64 hex digits.
        local raw = tmp .. "/r"
        enc_store(raw, KEY_B, { abcd = "raw-keyed" })
        assert.same({ "raw-keyed\n", "", 0 }, { run_k(tmp, { "get", raw, "abcd", "--key-env", "KB" }) })
    end)

    it("info of an encrypted store without the key prints what the meta file says", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        enc_store(dir, KEY_A, { abcdef = "hello" }, { shards = 3, key_len = 6 })
        assert.same({ "store " .. dir .. "\nkey_len 6\nvalue_len 0\nshards 3\nencrypted yes\n"
            .. "cipher xchacha20-poly1305\n(keys, files and bytes need the key: pass it with --key-env NAME)\n",
            "", 0 }, { run_k(tmp, { "info", dir }) })
        local aes = tmp .. "/aes"
        local s = armdb.store(aes, { key_len = 4, encryption_key = KEY_A, cipher = "aes-256-gcm" })
        if s then -- where the CPU has AES-256-GCM
            assert(s:close())
            local out, err, code = run_k(tmp, { "info", aes })
            assert.same({ "", 0 }, { err, code })
            assert.truthy(out:find("\nencrypted yes\ncipher aes-256-gcm\n", 1, true), out)
            out = run_k(tmp, { "info", aes, "--key-env", "KA" })
            assert.truthy(out:find("\ncipher aes-256-gcm\nkeys 0\n", 1, true), out)
        end
    end)

    it("fails without a key, with a wrong key, a missing or malformed variable; never shows a key", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        enc_store(dir, KEY_A, { abcd = "hello" })
        local no_key = "armdb: store " .. dir .. " is encrypted: pass its key with --key-env NAME (an environment"
            .. " variable that holds it)\n"
        local wrong = "armdb: wrong key for store " .. dir .. " (the key in --key-env KB)\n"
        for _, cmd in ipairs({ { "get", dir, "abcd" }, { "put", dir, "abcd", "new" }, { "scan", dir },
            { "dump", dir }, { "verify", dir }, { "stats", dir }, { "del", dir, "abcd" } }) do
            assert.same({ "", no_key, 1 }, { run_k(tmp, cmd) })
            local with = { unpack(cmd) }
            with[#with + 1] = "--key-env"
            with[#with + 1] = "KB"
            assert.same({ "", wrong, 1 }, { run_k(tmp, with) })
        end
        assert.same({ "", "armdb: --key-env NOPE: the environment variable NOPE is not set or empty\n", 2 },
            { run_k(tmp, { "get", dir, "abcd", "--key-env", "NOPE" }) })
        assert.same({ "", "armdb: --key-env EMPTY: the environment variable EMPTY is not set or empty\n", 2 },
            { run_k(tmp, { "get", dir, "abcd", "--key-env", "EMPTY" }) })
        assert.same({ "", "armdb: --key-env SHORT: the key in SHORT is 16 bytes; a key is 32 raw bytes or 64"
            .. " hexadecimal digits\n", 2 }, { run_k(tmp, { "put", dir, "abcd", "x", "--key-env", "SHORT" }) })
        assert.same({ "", "armdb: --key-env NOTHEX: the key in NOTHEX is 64 bytes; a key is 32 raw bytes or 64"
            .. " hexadecimal digits\n", 2 }, { run_k(tmp, { "info", dir, "--key-env", "NOTHEX" }) })
        -- The key itself where the name of a variable belongs: refused, not echoed.
        assert.same({ "", "armdb: --key-env takes the name of an environment variable that holds the key, not the"
            .. " key itself\n", 2 }, { run_k(tmp, { "get", dir, "abcd", "--key-env", KEY_A_HEX }) })
        assert.same({ "", "armdb: --key-env takes the name of an environment variable that holds the key, not the"
            .. " key itself\n", 2 }, { run_k(tmp, { "get", dir, "abcd", "--key-env", KEY_B }) })
        -- No option takes a key; a key given as one is not echoed either.
        assert.same({ "", "armdb: unknown option --key for get (see armdb help get)\n", 2 },
            { run_k(tmp, { "get", dir, "abcd", "--key=" .. KEY_A_HEX }) })
        assert.same({ "", "armdb: unknown option --encryption-key for get (see armdb help get)\n", 2 },
            { run_k(tmp, { "get", dir, "abcd", "--encryption-key=" .. KEY_B }) })
        -- Nothing was written by any of it, and the right key still reads it.
        assert.same({ abcd = "hello" }, store_contents(dir, KEY_A))
        assert.same({ "hello\n", "", 0 }, { run_k(tmp, { "get", dir, "abcd", "--key-env", "KA" }) })
        -- A key for a plain store is refused too.
        local plain = tmp .. "/p"
        make_store(plain, { abcd = "plain" })
        assert.same({ "", "armdb: store " .. plain .. " is not encrypted: leave out --key-env\n", 1 },
            { run_k(tmp, { "get", plain, "abcd", "--key-env", "KA" }) })
    end)

    it("reads and writes an encrypted database's collections with --key-env", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        enc_db(dir, KEY_A)
        assert.same({ "", "", 0 }, { run_k(tmp, { "put", "--key-env", "KA", dir .. "/users", "51", '{"n":51}' }) })
        assert.same({ '{"n":51}\n', "", 0 }, { run_k(tmp, { "get", "--key-env", "KA", dir .. "/users", "51" }) })
        assert.same({ '{"n":7}\n', "", 0 }, { run_k(tmp, { "get", "--key-env", "KA", "-c", "users", dir, "7" }) })
        assert.same({ "aaaa\tfirst\nbbbb\tsecond\n", "", 0 },
            { run_k(tmp, { "scan", "--key-env", "KA", dir .. "/notes" }) })
        assert.same({ "database " .. dir .. "\ncollections 2\n"
            .. "  notes\tkey string(4)\tvalue raw\tkeys 2\tencrypted yes\tcipher xchacha20-poly1305\n"
            .. "  users\tkey u64\tvalue json\tkeys 51\tencrypted yes\tcipher xchacha20-poly1305\n", "", 0 },
            { run_k(tmp, { "info", "--key-env", "KA", dir }) })
        assert.same({ "database " .. dir .. "\ncollections 2\n"
            .. "  notes\tkey string(4)\tvalue raw\tencrypted yes\tcipher xchacha20-poly1305\n"
            .. "  users\tkey u64\tvalue json\tencrypted yes\tcipher xchacha20-poly1305\n"
            .. "(key counts need the key: pass it with --key-env NAME)\n", "", 0 }, { run_k(tmp, { "info", dir }) })
        local out, err, code = run_k(tmp, { "verify", "--key-env", "KA", dir })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^%[notes%] entries 2\n"))
        assert.truthy(out:find("\n%[users%] entries 51\n"))
        assert.truthy(out:find("\n%[users%] ok\n$"))
        local script = tmp .. "/job.lua"
        write_file(script, 'local db = ...\nio.write(assert(db:collection("users")):count(), "\\n")\n')
        assert.same({ "51\n", "", 0 }, { run_k(tmp, { "run", "--key-env", "KA", script, dir }) })
        local users = dir .. "/users"
        assert.same({ "", "armdb: store " .. users .. " is encrypted: pass its key with --key-env NAME (an"
            .. " environment variable that holds it)\n", 1 }, { run_k(tmp, { "get", users, "7" }) })
        assert.same({ "", "armdb: wrong key for store " .. users .. " (the key in --key-env KB)\n", 1 },
            { run_k(tmp, { "get", users, "7", "--key-env", "KB" }) })
        assert.same({ "", "armdb: wrong key for store " .. dir .. "/notes (the key in --key-env KB)\n", 1 },
            { run_k(tmp, { "verify", dir, "--key-env", "KB" }) })
    end)

    it("rekey rotates a raw store's key: the old key fails, the new one reads everything", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        local t = {}
        for i = 1, 300 do
            t[string.format("%04d", i)] = "value " .. i
        end
        enc_store(dir, KEY_A, t)
        local out, err, code = run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KB" })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^rekeyed store " .. pattern(dir) .. ": 300 keys, cipher xchacha20%-poly1305,"
            .. " in %d+%.%d%d s\n$"), out)
        assert.same({ "", "armdb: wrong key for store " .. dir .. " (the key in --key-env KA)\n", 1 },
            { run_k(tmp, { "get", dir, "0001", "--key-env", "KA" }) })
        local _, _, bad = armdb.store(dir, { read_only = true, encryption_key = KEY_A })
        assert.equal(armdb.codes.BADKEY, bad)
        assert.same(t, store_contents(dir, KEY_B))
        assert.same({ "value 42\n", "", 0 }, { run_k(tmp, { "get", dir, "0042", "--key-env", "KB" }) })
        -- Again: the store has the new key, nothing changes.
        assert.same({ "store " .. dir .. " has the new key already: nothing to do\n", "", 0 },
            { run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KB" }) })
        assert.same(t, store_contents(dir, KEY_B))
        -- Neither key opens it: a failure, nothing written.
        local other = tmp .. "/o"
        enc_store(other, KEY_A, { abcd = "x" })
        assert.same({ "", "armdb: wrong key for store " .. other .. ": neither the key in --key-env KB nor the one"
            .. " in --new-key-env KC opens it\n", 1 },
            { run_k(tmp, { "rekey", other, "--key-env", "KB", "--new-key-env", "KC" }) })
        assert.same({ abcd = "x" }, store_contents(other, KEY_A))
    end)

    it("rekey refuses what it cannot rotate, with status 2 for usage and 1 for a plain store", function()
        local tmp = tmpdir()
        local dir = tmp .. "/s"
        enc_store(dir, KEY_A, { abcd = "x" })
        local needs = "armdb: rekey needs --key-env OLD and --new-key-env NEW, the environment variables that hold"
            .. " the keys (see armdb help rekey)\n"
        assert.same({ "", needs, 2 }, { run_k(tmp, { "rekey", dir, "--key-env", "KA" }) })
        assert.same({ "", needs, 2 }, { run_k(tmp, { "rekey", dir, "--new-key-env", "KB" }) })
        assert.same({ "", "armdb: rekey needs DIR (see armdb help rekey)\n", 2 },
            { run_k(tmp, { "rekey", "--key-env", "KA", "--new-key-env", "KB" }) })
        assert.same({ "", "armdb: --key-env KA and --new-key-env KA hold the same key: nothing to rotate\n", 2 },
            { run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KA" }) })
        assert.same({ "", "armdb: --new-key-env SHORT: the key in SHORT is 16 bytes; a key is 32 raw bytes or 64"
            .. " hexadecimal digits\n", 2 }, { run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env",
            "SHORT" }) })
        assert.same({ "", "armdb: --new-key-env NOPE: the environment variable NOPE is not set or empty\n", 2 },
            { run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "NOPE" }) })
        assert.same({ x = nil, abcd = "x" }, store_contents(dir, KEY_A))
        local plain = tmp .. "/p"
        make_store(plain, { abcd = "x" })
        assert.same({ "", "armdb: store " .. plain .. " is not encrypted: it has no key to rotate\n", 1 },
            { run_k(tmp, { "rekey", plain, "--key-env", "KA", "--new-key-env", "KB" }) })
        -- A collection alone: its database is to be rotated.
        local db = tmp .. "/db"
        enc_db(db, KEY_A)
        local msg = "armdb: " .. db .. "/users is collection users of database " .. db .. ", whose collections"
            .. " share one key: rekey the database (armdb rekey " .. db .. " --key-env OLD --new-key-env NEW)\n"
        assert.same({ "", msg, 2 }, { run_k(tmp, { "rekey", db .. "/users", "--key-env", "KA", "--new-key-env",
            "KB" }) })
        msg = msg:gsub("^armdb: " .. pattern(db) .. "/users", "armdb: " .. db .. "/users")
        assert.same({ "", msg, 2 }, { run_k(tmp, { "rekey", db, "-c", "users", "--key-env", "KA",
            "--new-key-env", "KB" }) })
        assert.is_false(exists(db .. "/REKEY"))
        assert.same({ '{"n":3}\n', "", 0 }, { run_k(tmp, { "get", db .. "/users", "3", "--key-env", "KA" }) })
        -- A plain database: nothing is rotated, and no REKEY file is left.
        local pdb = tmp .. "/pdb"
        local p = assert(armdb.open(pdb))
        assert(p:collection("c", { key = "u64", value = "raw" }))
        p:close()
        assert.same({ "", "armdb: database " .. pdb .. " is not encrypted: it has no key to rotate\n", 1 },
            { run_k(tmp, { "rekey", pdb, "--key-env", "KA", "--new-key-env", "KB" }) })
        assert.is_false(exists(pdb .. "/REKEY"))
    end)

    it("rekey rotates every collection of a database, a line each as it is done", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        enc_db(dir, KEY_A)
        local before = enc_dumps(tmp, dir, "KA")
        assert.equal(50, #lines_set(before.users))
        local out, err, code = run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KB" })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^%[notes%] rekeyed: 2 keys in %d+%.%d%d s\n%[users%] rekeyed: 50 keys in %d+%.%d%d s\n"
            .. "rekeyed database " .. pattern(dir) .. ": 2 collections, 52 keys, in %d+%.%d%d s\n$"), out)
        assert.is_false(exists(dir .. "/REKEY"))
        check_rotated(tmp, dir, before)
        local db = assert(armdb.open(dir, { encryption_key = KEY_B }))
        defer(function() db:close() end)
        assert.same({ n = 50 }, assert(db:collection("users")):get(50))
        db:close()
        -- Again: nothing to do.
        assert.same({ "database " .. dir .. " has the new key already: nothing to do\n", "", 0 },
            { run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KB" }) })
    end)

    it("rekey completes a database rotation that was cut short", function()
        local tmp = tmpdir()
        local dir = tmp .. "/db"
        enc_db(dir, KEY_A)
        local before = enc_dumps(tmp, dir, "KA")
        -- Cut short: users rotated, notes not, and the REKEY file left.
        local s = assert(armdb.store(dir .. "/users", { encryption_key = KEY_A }))
        assert(s:rekey(KEY_B))
        assert(s:close())
        write_file(dir .. "/REKEY", '{"format":1}')
        local hint = "; a key rotation of " .. dir .. " was cut short: complete it with armdb rekey " .. dir
            .. " --key-env OLD --new-key-env NEW\n"
        assert.same({ "", "armdb: wrong key for store " .. dir .. "/notes (the key in --key-env KB)" .. hint, 1 },
            { run_k(tmp, { "get", dir .. "/notes", "aaaa", "--key-env", "KB" }) })
        assert.same({ "", "armdb: wrong key for store " .. dir .. "/users (the key in --key-env KA)" .. hint, 1 },
            { run_k(tmp, { "get", dir .. "/users", "1", "--key-env", "KA" }) })
        local out = run_k(tmp, { "info", dir })
        assert.truthy(out:find("\n(a key rotation of " .. dir .. " was cut short: complete it with armdb rekey "
            .. dir .. " --key-env OLD --new-key-env NEW)\n", 1, true), out)
        local err, code
        out, err, code = run_k(tmp, { "rekey", dir, "--key-env", "KA", "--new-key-env", "KB" })
        assert.same({ "", 0 }, { err, code })
        assert.truthy(out:find("^%[users%] has the new key already\n%[notes%] rekeyed: 2 keys in %d+%.%d%d s\n"
            .. "completed the key rotation of database " .. pattern(dir) .. " that was cut short: 2 collections %(1"
            .. " rotated now, 1 had the new key already%), 2 keys rotated, in %d+%.%d%d s\n$"), out)
        assert.is_false(exists(dir .. "/REKEY"))
        check_rotated(tmp, dir, before)
        out = run_k(tmp, { "info", dir, "--key-env", "KB" })
        assert.falsy(out:find("cut short", 1, true), out)
    end)
end)
