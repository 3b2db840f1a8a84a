-- armdb.cli: the `armdb` command (bin/armdb is only its launcher).
--
-- M.main(argv) runs one command and returns its exit status: 0 on
-- success, 1 when the command failed (no such store, a locked store, a
-- missing key, a malformed dump line, damage found by verify), 2 for a
-- usage error (unknown command or option, a missing or malformed
-- argument). Every failure writes exactly one line "armdb: ..." to stderr.
--
-- A DIR argument is one of three things, told apart by the files in it:
--   a raw store     DIR/ARMDB exists: keys and values are byte strings, keys
--                   exactly key_len bytes; --hex gives and prints both as hex.
--   a database      DIR/CATALOG exists: commands that take keys need a
--                   collection, as DIR/NAME or -c NAME.
--   a collection    DIR/ARMDB exists and DIR/../CATALOG names it: keys and
--                   values are parsed and printed by the collection's codecs.
-- Read-only commands (info, get, scan, dump, verify, stats) open stores
-- read-only: they take no lock and work beside a live writer process, and
-- see the store as it was at open. put, del and load open for writing.
-- The raw-store commands need only armdb.store; the collection commands
-- load the collections layer (armdb.open) and lua-cjson when first used.
--
-- Encrypted stores: the key comes only from the environment, named by
-- --key-env NAME (32 raw bytes or 64 hex digits, as the Lua API takes it),
-- so that it is never on a command line (ps, shell history). A missing or
-- malformed variable is a usage error naming the variable, never showing
-- its value. `rekey` rotates the key of a store or a whole database
-- (--key-env OLD --new-key-env NEW) and completes a database rotation that
-- was cut short. `info` reads whether a store is encrypted, and its cipher,
-- from the meta file, so it works without the key.
local ffi = require("ffi")
local armdb = require("armdb")

local M = {}

pcall(ffi.cdef, "int isatty(int fd);")
pcall(ffi.cdef, "int access(const char *path, int mode);")
pcall(ffi.cdef, "typedef struct { long sec, nsec; } armdb_cli_timespec;"
    .. " int clock_gettime(int clock, armdb_cli_timespec *ts);")

local USAGE, FAIL = 2, 1

-- A failure raised inside a command: caught by main, printed as one line.
local function die(status, fmt, ...)
    error({ armdb_cli = true, status = status, msg = string.format(fmt, ...) }, 0)
end

-- An error raised by the binding, as text: without the Lua position
-- ("file.lua:12: ") and the "armdb: " prefix that main adds back.
local function clean_err(e)
    local msg = tostring(e):match("^[^\n]*")
    msg = msg:gsub("^[^:]*%.lua:%d+: ", "")
    return (msg:gsub("^armdb: ", ""))
end

local function usage_error(fmt, ...)
    die(USAGE, fmt, ...)
end

local function failure(fmt, ...)
    die(FAIL, fmt, ...)
end

-- ---- help texts ----

local GENERAL = [[
Usage: armdb COMMAND [OPTIONS] ARGS...

Commands:
%s
General options:
  -h, --help       show this help, or a command's with `armdb COMMAND --help`
  --version        print the version of armdb and of the library loaded

DIR is a raw store (a directory with an ARMDB file), a database (a directory
with a CATALOG file; name a collection as DIR/NAME or with -c NAME), or a
collection directory DIR/NAME inside a database.
An encrypted store or database needs its key: put it in an environment
variable and name that with --key-env NAME (the key itself is never an
argument). `armdb rekey DIR --key-env OLD --new-key-env NEW` rotates it.
Exit status: 0 success, 1 failure, 2 usage error; errors are one line on stderr.
See `armdb help COMMAND` for each command.
]]

local COMMON = [[

Options for every command that takes a DIR:
  -c, --collection NAME   the collection NAME of the database DIR
  --hex                   raw stores: keys and values are given and printed
                          as hexadecimal (two digits a byte)
  --key-env NAME          the key of an encrypted store or database is in the
                          environment variable NAME: 32 raw bytes or 64
                          hexadecimal digits (no option takes the key itself)
  -h, --help              show this help
]]

local COMMANDS = {
    { name = "info", args = "DIR", summary = "what DIR is: a store's settings and size, a database's collections",
      text = [[
Prints what DIR is. For a raw store or a collection: key_len, value_len
(0 = variable), shards, encrypted (yes or no; if yes, a cipher line:
xchacha20-poly1305 or aes-256-gcm), keys, files (data files) and bytes
(bytes of entries in data files, live and dead). A collection also prints
its key and value codecs. For a database: each collection with its codecs,
its number of keys and whether it is encrypted, and a line if a key
rotation was cut short. Opens read-only.

Whether a store is encrypted, and its cipher, are read from its meta file,
so info works on an encrypted store without its key: it then prints the
settings and leaves out keys, files and bytes (key counts for a database),
saying so in a last line. With --key-env it prints everything.]] },
    { name = "get", args = "DIR KEY", summary = "print the value of KEY",
      text = [[
Prints the value of KEY followed by a newline (-n: without it). A missing key
is a failure: "armdb: KEY: not found", exit status 1. Raw stores print the
value's bytes as they are (--hex: as hex); collections print it per the value
codec (json as JSON text, number as a number). Opens read-only.

  -n, --no-newline   do not print a newline after the value]] },
    { name = "put", args = "DIR KEY VALUE", summary = "set KEY to VALUE (VALUE - reads stdin)",
      text = [[
Sets KEY to VALUE. VALUE "-" reads the value from stdin, every byte of it.
Raw stores: KEY must be exactly key_len bytes (key_len*2 hex digits with
--hex). Collections: KEY is parsed per the key codec (u32/u64/i64 from
decimal text, uuid from its 36-character text, bytes(N)/string(N) as given);
VALUE per the value codec (json and lua: JSON text; number: a number; raw: as
given). Collections of an FFI struct type cannot be written from here (use
`armdb run`). Opens for writing: fails if another process writes the store.]] },
    { name = "del", args = "DIR KEY", summary = "delete KEY",
      text = [[
Deletes KEY. A missing key is a failure: "armdb: KEY: not found", exit
status 1, nothing written. Opens for writing.]] },
    { name = "scan", args = "DIR", summary = "print the pairs, in key order for ordered stores",
      text = [[
Prints live pairs as KEY<TAB>VALUE lines: every one by default, in key order
for an ordered store or collection (created with ordered = true), in no
particular order otherwise. In text output a backslash, tab, newline and
other control bytes are escaped (\\, \t, \n, \xNN), so one line is always
one pair; --hex prints hex. Opens read-only.

  --limit N        stop after N pairs
  --keys-only      print only the keys
  --from KEY       start at KEY (or the first key after it)
  --to KEY         stop before KEY
  --prefix P       only keys that begin with P
  --reverse        in descending key order

--from, --to, --prefix and --reverse need an ordered store or collection.
Raw stores take bounds as bytes (hex with --hex), shorter than key_len if
you like: --from ab starts at the first key beginning "ab". Collections
parse --from and --to per the key codec (u64: a number, so ranges are
numeric); --prefix is for string(N) and bytes(N) keys.]] },
    { name = "dump", args = "DIR", summary = "write every pair as JSON lines",
      text = [[
Writes every live pair as one JSON object a line:
  {"key":KEY,"value":VALUE}
KEY and VALUE are JSON strings when the bytes are valid UTF-8; otherwise (and
always with --hex) the field is written as "key_hex" / "value_hex" holding the
bytes in hex. Collections: integer keys are JSON numbers (strings of decimal
digits beyond 2^53, so nothing is rounded), uuid keys their text; json values
are embedded as JSON, number values as numbers (inf and nan as the strings
"inf", "-inf", "nan"), raw values as strings or value_hex; lua values and FFI
struct values as "value_hex", the bytes the codec stores. A progress bar goes
to stderr when it is a terminal. Opens read-only.

  -o, --output FILE   write to FILE instead of stdout]] },
    { name = "load", args = "DIR [FILE|-]", summary = "put the pairs of a dump (JSON lines) into DIR",
      text = [[
Reads JSON lines as written by dump (from FILE, or stdin if FILE is "-" or
absent) and puts each pair into DIR. Each object needs "key" or "key_hex" and
"value" or "value_hex". Empty lines are skipped.

The load is a prefix, not all-or-nothing: a malformed line (bad JSON, a
missing field, bad hex, a key of the wrong length) stops it with one line
"armdb: FILE:LINE: ..." naming the lines loaded before it, and exit status 1.
The pairs of the lines before it are in the store and durable (the store is
synced before exit); nothing else in the store was touched, so fix the line
and load again from it. A progress bar goes to stderr when it is a terminal.
Opens for writing.]] },
    { name = "verify", args = "DIR", summary = "read every entry and check its checksum",
      text = [[
Opens DIR read-only and reads every live entry (the full scan checks each
entry's checksum, and goes on past a damaged one), then reports the entries
read, their bytes, the damaged entries among them, and the damage counted at
open: corrupt_entries (entries of immutable files that failed their checksum)
and torn_bytes (bytes cut from torn tails). A database is verified
collection by collection. Output, one NAME VALUE line each: entries, bytes,
damaged_entries, corrupt_entries, torn_bytes, then first_damage MESSAGE if
an entry was damaged, scan_error MESSAGE if the scan itself failed, and "ok"
or "damaged" (prefixed by "[NAME] " for each collection of a database).
Exit status 0 if all is clean; 1 if damage was found, with the line
"armdb: damage found in DIR" on stderr. A progress bar goes to stderr when it
is a terminal.]] },
    { name = "stats", args = "DIR", summary = "print the store's counters",
      text = [[
Prints the counters and state of the store (armdb_stat) as NAME VALUE lines,
sorted by name; for a database, those of each collection under a "[NAME]"
line. Opens read-only.

  --json           print one JSON object instead (for a database: an object
                   of the collections' objects)]] },
    { name = "compact", args = "DIR", summary = "reclaim the space of overwritten and deleted entries",
      text = [[
Compacts DIR now (armdb_compact): every data file holding overwritten or
deleted entries is rewritten without them and removed. A database is
compacted collection by collection. Prints, one NAME VALUE line each (under
"[NAME]" for each collection of a database): files_compacted, bytes_read,
bytes_written, bytes_reclaimed, disk_before and disk_after (bytes of data
files). Opens for writing: fails if another process writes the store.]] },
    { name = "rekey", args = "DIR", summary = "rotate the encryption key (--key-env OLD --new-key-env NEW)",
      text = [[
  armdb rekey DIR --key-env OLD --new-key-env NEW

Seals every page of an encrypted raw store or database again with the key in
the environment variable NEW; OLD holds the current key. Both are needed, and
must differ. A database is rotated collection by collection (one line each,
"[NAME] rekeyed: N keys in S s", as each is done); while it runs, the file
DIR/REKEY says a rotation is under way. A collection cannot be rotated on
its own: all collections of a database share its key, so rekey the database.
Prints a summary line: what was rotated, how many collections and keys, and
the time it took.

If a rotation of a database was cut short (a crash, a failure), some
collections have the new key and some the old one: the same command
completes it, rotating those still on OLD (a line "[NAME] has the new key
already" for each of the others). Run again after the rotation, it says the
new key is there already and changes nothing. A raw store's own rotation is
crash-safe: it has one key or the other, never both.

Exit status 1 if neither key opens the store (or a collection), if it is not
encrypted, or if the rotation fails; the keys are never printed. Opens for
writing: fails if another process writes the store or a collection.

  --new-key-env NAME   the environment variable holding the new key (32 raw
                       bytes or 64 hexadecimal digits)]] },
    { name = "run", args = "SCRIPT.lua DIR [ARGS...]", summary = "run a Lua script with DIR opened",
      text = [[
Runs SCRIPT.lua with DIR opened as its first vararg, ARGS after it:
  local db, first_arg = ...
A raw store is passed as an armdb.store handle, a database as an armdb.open
database, a collection directory as that collection. The store or database is
closed when the script returns; if the script raises, its error message is
printed as "armdb: SCRIPT: MESSAGE" and the exit status is 1. If the script
returns an integer, that is the exit status; otherwise 0. Options are read
only before SCRIPT.lua; everything after DIR goes to the script.

  --read-only      open DIR read-only (no lock; works beside a writer)]] },
}

local BY_NAME = {}
for _, c in ipairs(COMMANDS) do
    BY_NAME[c.name] = c
end
BY_NAME.help = { name = "help", args = "[COMMAND]", summary = "show help for a command",
    text = "Shows the help of COMMAND, or the list of commands." }
table.insert(COMMANDS, BY_NAME.help)

local function general_help()
    local lines = {}
    for _, c in ipairs(COMMANDS) do
        lines[#lines + 1] = string.format("  %-7s %-26s %s", c.name, c.args, c.summary)
    end
    return string.format(GENERAL, table.concat(lines, "\n") .. "\n")
end

local function command_help(c)
    local summary = c.summary:gsub("^%l", string.upper)
    local s = "Usage: armdb " .. c.name .. " [OPTIONS] " .. c.args .. "\n\n" .. summary .. ".\n\n" .. c.text .. "\n"
    if c.name ~= "help" then
        s = s .. COMMON
    end
    return s
end

-- ---- arguments ----

-- Options each command accepts besides the common ones: name -> takes a value.
local OPTIONS = {
    get = { ["no-newline"] = false },
    scan = { limit = true, ["keys-only"] = false, from = true, to = true, prefix = true, reverse = false },
    dump = { output = true },
    stats = { json = false },
    run = { ["read-only"] = false },
    rekey = { ["new-key-env"] = true },
}
local SHORT = { c = "collection", h = "help", n = "no-newline", o = "output" }
local COMMON_OPTS = { collection = true, hex = false, help = false, ["key-env"] = true }

-- argv after the command -> options table, positionals. Options may come
-- anywhere ("--" ends them) except for run, whose script arguments start
-- after its second positional.
local function parse_args(cmd, argv, first)
    local allowed = OPTIONS[cmd] or {}
    local opts, pos = {}, {}
    local i = first
    while i <= #argv do
        local a = argv[i]
        if cmd == "run" and #pos >= 2 then
            pos[#pos + 1] = a
        elseif a == "--" then
            for j = i + 1, #argv do
                pos[#pos + 1] = argv[j]
            end
            break
        elseif a:sub(1, 1) == "-" and a ~= "-" then
            local name, value
            if a:sub(1, 2) == "--" then
                name, value = a:match("^%-%-([^=]+)=(.*)$")
                name = name or a:sub(3)
            else
                name = SHORT[a:sub(2)]
                if name == nil then
                    usage_error("unknown option %s (see armdb help %s)", a, cmd)
                end
            end
            local takes = allowed[name]
            if takes == nil then
                takes = COMMON_OPTS[name]
            end
            if takes == nil then
                -- (without a value given as --name=VALUE: it may be a key)
                usage_error("unknown option %s for %s (see armdb help %s)", value and "--" .. name or a, cmd, cmd)
            end
            if takes then
                if value == nil then
                    i = i + 1
                    value = argv[i]
                    if value == nil then
                        usage_error("option %s needs a value", a)
                    end
                end
                opts[name] = value
            else
                if value ~= nil then
                    usage_error("option --%s takes no value", name)
                end
                opts[name] = true
            end
        else
            pos[#pos + 1] = a
        end
        i = i + 1
    end
    return opts, pos
end

-- ---- text forms of bytes ----

local to_hex = require("armdb.codecs").to_hex

local function from_hex(h, what)
    local b = require("armdb.codecs").from_hex(h)
    if b == nil then
        return nil, what .. " is not hexadecimal (two digits a byte): " .. h
    end
    return b
end

local ESC = { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }
-- One line of text for any bytes: control bytes and backslash escaped.
local function escape(s)
    return (s:gsub("[%z\1-\31\\\127]", function(c)
        return ESC[c] or string.format("\\x%02x", c:byte())
    end))
end

local function valid_utf8(s)
    if not s:find("[\128-\255]") then
        return true
    end
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, min
        if c < 0x80 then
            len = 1
        elseif c >= 0xc2 and c <= 0xdf then
            len, min = 2, 0x80
        elseif c >= 0xe0 and c <= 0xef then
            len, min = 3, 0x800
        elseif c >= 0xf0 and c <= 0xf4 then
            len, min = 4, 0x10000
        else
            return false
        end
        if len > 1 then
            if i + len - 1 > n then
                return false
            end
            local cp = bit.band(c, bit.rshift(0x7f, len))
            for j = i + 1, i + len - 1 do
                local b = s:byte(j)
                if b < 0x80 or b > 0xbf then
                    return false
                end
                cp = cp * 64 + (b - 0x80)
            end
            if cp < min or cp > 0x10ffff or (cp >= 0xd800 and cp <= 0xdfff) then
                return false
            end
        end
        i = i + len
    end
    return true
end

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
    ["\t"] = "\\t" }
local function json_string(s)
    return '"' .. s:gsub('[%z\1-\31"\\\127]', function(c)
        return JSON_ESC[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
end

local function json_number(x)
    if x ~= x then
        return '"nan"'
    elseif x == math.huge then
        return '"inf"'
    elseif x == -math.huge then
        return '"-inf"'
    elseif x == math.floor(x) and math.abs(x) < 2 ^ 53 then
        return string.format("%d", x)
    end
    return string.format("%.17g", x)
end

local function cjson()
    local ok, mod = pcall(require, "cjson")
    if not ok then
        failure("this needs lua-cjson, which is not installed: %s", tostring(mod):match("^[^\n]*"))
    end
    return mod
end

-- ---- files and directories ----

local function exists(path)
    return ffi.C.access(path, 0) == 0
end

local function is_dir(path)
    return exists(path .. "/.")
end

local function basename(path)
    path = path:gsub("/+$", "")
    return path:match("([^/]*)$")
end

local function dirname(path)
    path = path:gsub("/+$", "")
    local d = path:match("^(.*)/[^/]*$")
    if d == nil then
        return "."
    end
    return d == "" and "/" or d
end

-- The catalog of a database directory, checked as armdb.open checks it.
local function read_catalog(dbdir)
    local cat, msg = require("armdb.db").read_catalog(dbdir)
    if not cat then
        failure("%s", msg or (dbdir .. " has no CATALOG"))
    end
    return cat
end

-- What DIR is: { kind = "store" | "database" | "collection", dir, dbdir,
-- name, spec }.
local function resolve(dir, opts)
    if not exists(dir) then
        failure("no such directory: %s", dir)
    end
    if not is_dir(dir) then
        failure("not a directory: %s", dir)
    end
    local t = { dir = dir }
    if exists(dir .. "/CATALOG") then
        t.kind, t.dbdir = "database", dir
        if opts.collection then
            t.name = opts.collection
        end
    elseif exists(dir .. "/ARMDB") then
        local parent = dirname(dir)
        if exists(parent .. "/CATALOG") and read_catalog(parent).collections[basename(dir)] then
            t.kind, t.dbdir, t.name = "collection", parent, basename(dir)
        else
            t.kind = "store"
        end
        if opts.collection then
            usage_error("-c NAME is for a database directory; %s is a %s", dir, t.kind)
        end
    else
        failure("%s is not an armdb store or database (it has no ARMDB or CATALOG file)", dir)
    end
    if t.name then
        local cat = read_catalog(t.dbdir)
        t.spec = cat.collections[t.name]
        if t.spec == nil then
            failure("no collection %s in database %s", t.name, t.dbdir)
        end
        t.kind = "collection"
        t.dir = t.dbdir .. "/" .. t.name
    end
    if opts.hex and t.kind ~= "store" then
        usage_error("--hex is for raw stores; %s is a %s (its codecs give the text form)", dir, t.kind)
    end
    return t
end

local function need_collection(t, cmd)
    if t.kind == "database" then
        usage_error("%s is a database: name a collection as %s/NAME or with -c NAME (see armdb help %s)",
            t.dir, t.dir, cmd)
    end
end

-- ---- encryption keys ----

local BADKEY, MISMATCH = armdb.codes.BADKEY, armdb.codes.MISMATCH

-- opts[KEY]: the key read from the variable --key-env names (set by main);
-- a table as the index, so no option name can reach it.
local KEY = {}

-- The key in the environment variable named by option `opt` (as 32 bytes),
-- or nil if the option is not given. Every problem is a usage error that
-- names the variable and never shows what it holds.
local function env_key(opts, opt)
    local name = opts[opt]
    if name == nil then
        return nil
    end
    -- Not a variable name (or a key given in its place): not echoed either.
    if not name:find("^[%a_][%w_]*$") or (#name == 64 and name:find("^%x+$")) then
        usage_error("--%s takes the name of an environment variable that holds the key, not the key itself",
            opt)
    end
    local v = os.getenv(name)
    if v == nil or v == "" then
        usage_error("--%s %s: the environment variable %s is not set or empty", opt, name, name)
    end
    local ok, key = pcall(require("armdb.store").key_bytes, v, "--" .. opt, 1)
    if not ok then
        usage_error("--%s %s: the key in %s is %d bytes; a key is 32 raw bytes or 64 hexadecimal digits", opt,
            name, name, #v)
    end
    return key
end

local CIPHERS = { [1] = "xchacha20-poly1305", [2] = "aes-256-gcm" }

-- What the meta file DIR/ARMDB says without the key: { key_len, value_len,
-- shards, encrypted, cipher }, or nil if it is missing or not a meta file
-- (an open then says what is wrong). Little-endian u32s: key_len at 12,
-- value_len 16, shards 20, flags 24 (bit 1: encrypted), cipher id 28.
local function read_meta(dir)
    local f = io.open(dir .. "/ARMDB", "rb")
    if f == nil then
        return nil
    end
    local b = f:read(32)
    f:close()
    if b == nil or #b < 32 or b:sub(1, 8) ~= "ARMDB\0\0\1" then
        return nil
    end
    local function u32(at)
        local b1, b2, b3, b4 = b:byte(at + 1, at + 4)
        return b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
    end
    local encrypted = bit.band(u32(24), 2) ~= 0
    local id = u32(28)
    return { key_len = u32(12), value_len = u32(16), shards = u32(20), encrypted = encrypted,
        cipher = encrypted and (CIPHERS[id] or "unknown (" .. id .. ")") or nil }
end

local function rekey_hint(dbdir)
    return string.format("a key rotation of %s was cut short: complete it with armdb rekey %s --key-env OLD"
        .. " --new-key-env NEW", dbdir, dbdir)
end

-- Fail for a store (at dir; of the database dbdir, if any) that did not
-- open: msg and code as the binding gave them, in the words of the
-- command's options for a key problem.
local function open_failed(dir, opts, msg, code, dbdir, what)
    local var = opts["key-env"]
    what = what or "store"
    if code == BADKEY then
        if var == nil then
            failure("%s %s is encrypted: pass its key with --key-env NAME (an environment variable that"
                .. " holds it)", what, dir)
        end
        local rekeying = dbdir and exists(dbdir .. "/REKEY")
        failure("wrong key for %s %s (the key in --key-env %s)%s", what, dir, var,
            rekeying and "; " .. rekey_hint(dbdir) or "")
    end
    if code == MISMATCH and var and msg:find("is not encrypted", 1, true) then
        failure("%s %s is not encrypted: leave out --key-env", what, dir)
    end
    failure("%s", msg)
end

local function open_store(dir, read_only, opts, dbdir)
    local s, msg, code = armdb.store(dir, { read_only = read_only, create = false, encryption_key = opts[KEY] })
    if not s then
        open_failed(dir, opts, msg, code, dbdir)
    end
    return s
end

local function open_db(dbdir, read_only, opts)
    local ok, db, msg, code = pcall(armdb.open, dbdir, { read_only = read_only, create = false,
        encryption_key = opts[KEY] })
    if not ok then
        failure("cannot open database %s: %s", dbdir, clean_err(db))
    end
    if not db then
        open_failed(dbdir, opts, msg, code, dbdir, "database")
    end
    return db
end

local function open_collection(t, read_only, opts)
    local db = open_db(t.dbdir, read_only, opts)
    local coll, msg, code = db:collection(t.name)
    if not coll then
        db:close()
        open_failed(t.dir, opts, msg, code, t.dbdir)
    end
    return coll, db
end

-- ---- the progress bar (stderr, only on a terminal) ----

local Progress = {}
Progress.__index = Progress

-- Off a terminal, a bar that draws nothing, so callers need not ask.
local SILENT = { step = function() end, done = function() end }

local function progress(label, total)
    if ffi.C.isatty(2) ~= 1 then
        return SILENT
    end
    return setmetatable({ label = label, total = total, n = 0, shown = -1 }, Progress)
end

function Progress:step(n, done_bytes)
    self.n = n
    local pos = done_bytes or n
    local pct = (self.total and self.total > 0) and math.floor(pos * 100 / self.total) or nil
    local key = pct or math.floor(n / 10000)
    if key == self.shown then
        return
    end
    self.shown = key
    if pct then
        local w = math.floor(math.min(pct, 100) * 30 / 100)
        io.stderr:write(string.format("\r%s [%s%s] %3d%% %d", self.label, string.rep("#", w),
            string.rep(".", 30 - w), math.min(pct, 100), n))
    else
        io.stderr:write(string.format("\r%s %d", self.label, n))
    end
end

function Progress.done(_)
    io.stderr:write("\r\27[K")
end

-- ---- codecs of collections, in text ----

local INT_KEYS = { u32 = true, u64 = true, i64 = true }

-- Decimal text -> a Lua number, or an int64/uint64 cdata beyond 2^53.
local function parse_int(text, codec)
    local neg, digits = text:match("^(%-?)(%d+)$")
    if not digits then
        return nil
    end
    local n = tonumber(text)
    if math.abs(n) < 2 ^ 53 then
        return n
    end
    local acc = codec == "u64" and ffi.new("uint64_t", 0) or ffi.new("int64_t", 0)
    for d in digits:gmatch("%d") do
        acc = acc * 10 + tonumber(d)
    end
    return neg == "-" and -acc or acc
end

local function int_text(k)
    if type(k) == "number" then
        return string.format("%d", k)
    end
    return (tostring(k):gsub("U?LL$", ""))
end

-- KEY text -> a key the collection's codec takes; a key the codec refuses
-- is a usage error, said in the codec's words.
local function coll_key(t, text)
    local codec = t.spec.key
    local k = text
    if INT_KEYS[codec] then
        k = parse_int(text, codec)
        if k == nil then
            usage_error("key %s is not a decimal integer (the key codec of %s is %s)", text, t.name, codec)
        end
    end
    local have, codecs = pcall(require, "armdb.codecs")
    if have then
        local ok, err = pcall(function()
            return codecs.key(codec).encode(k, 1)
        end)
        if not ok then
            usage_error("%s", clean_err(err))
        end
    end
    return k
end

local function coll_key_text(t, k)
    if INT_KEYS[t.spec.key] then
        return int_text(k)
    end
    return escape(tostring(k))
end

local function coll_value(t, text)
    local codec = t.spec.value
    if codec == "raw" then
        return text
    elseif codec == "number" then
        local n = tonumber(text)
        if n == nil then
            usage_error("value %s is not a number (the value codec of %s is number)", text, t.name)
        end
        return n
    elseif codec == "json" or codec == "lua" then
        local ok, v = pcall(cjson().decode, text)
        if not ok then
            failure("value is not valid JSON: %s", v)
        end
        return v
    end
    failure("collection %s has values of type %s, which cannot be written from the command line;"
        .. " use armdb run", t.name, tostring(codec))
end

local function coll_value_text(t, v)
    local codec = t.spec.value
    if codec == "raw" then
        return escape(v)
    elseif codec == "number" then
        return json_number(v)
    elseif type(v) == "cdata" then
        return to_hex(ffi.string(v, ffi.sizeof(v)))
    end
    local ok, text = pcall(cjson().encode, v)
    return ok and text or tostring(v)
end

-- ---- commands ----

local out = io.stdout

local function raw_key(t, opts, s, text)
    local k = text
    if opts.hex then
        local err
        k, err = from_hex(text, "key")
        if not k then
            usage_error("%s", err)
        end
    end
    local key_len = s:stats().key_len
    if #k ~= key_len then
        failure("key %s is %d bytes; store %s has key_len %d", text, #k, t.dir, key_len)
    end
    return k
end

local function show(opts, s)
    return opts.hex and to_hex(s) or s
end

local function two_arg(pos, n, cmd)
    if #pos < n then
        usage_error("%s needs %s (see armdb help %s)", cmd, BY_NAME[cmd].args, cmd)
    end
    if #pos > n and not (cmd == "load" and n == 1) then
        usage_error("too many arguments for %s: %s", cmd, pos[n + 1])
    end
end

local cmds = {}

local function store_summary(dir, opts, dbdir)
    local s = open_store(dir, true, opts, dbdir)
    local st = s:stats()
    s:close()
    return st
end

-- The encryption lines of info for meta (read_meta's), or for a store
-- that opened (with a key or not) if its meta file could not be read.
local function encryption_text(meta, opts, sep)
    local encrypted, cipher
    if meta then
        encrypted, cipher = meta.encrypted, meta.cipher
    else
        encrypted = opts[KEY] ~= nil
    end
    if not encrypted then
        return "encrypted no"
    end
    return "encrypted yes" .. (cipher and sep .. "cipher " .. cipher or "")
end

function cmds.info(opts, pos)
    two_arg(pos, 1, "info")
    local t = resolve(pos[1], opts)
    -- (A REKEY file means a rotation was cut short only where there are
    -- keys to rotate.)
    local rekeying = t.dbdir and exists(t.dbdir .. "/REKEY")
    if t.kind == "database" then
        local cat = read_catalog(t.dir)
        local names = {}
        for name in pairs(cat.collections) do
            names[#names + 1] = name
        end
        table.sort(names)
        out:write(string.format("database %s\ncollections %d\n", t.dir, #names))
        local locked, encrypted = false, false
        for _, name in ipairs(names) do
            local c = cat.collections[name]
            local dir = t.dir .. "/" .. name
            local meta = read_meta(dir)
            local keys = ""
            encrypted = encrypted or (meta and meta.encrypted)
            if meta and meta.encrypted and not opts[KEY] then
                locked = true
            else
                keys = string.format("\tkeys %d", store_summary(dir, opts, t.dir).keys)
            end
            out:write(string.format("  %s\tkey %s\tvalue %s%s\t%s\n", name, tostring(c.key), tostring(c.value),
                keys, encryption_text(meta, opts, "\t")))
        end
        if locked then
            out:write("(key counts need the key: pass it with --key-env NAME)\n")
        end
        if rekeying and encrypted then
            out:write("(", rekey_hint(t.dir), ")\n")
        end
        return 0
    end
    local meta = read_meta(t.dir)
    local st
    if not (meta and meta.encrypted and not opts[KEY]) then
        st = store_summary(t.dir, opts, t.dbdir)
    end
    if t.kind == "collection" then
        out:write(string.format("collection %s of database %s\nkey %s\nvalue %s\n", t.name, t.dbdir,
            tostring(t.spec.key), tostring(t.spec.value)))
    else
        out:write(string.format("store %s\n", t.dir))
    end
    local set = st or meta
    out:write(string.format("key_len %d\nvalue_len %d\nshards %d\n%s\n", set.key_len, set.value_len, set.shards,
        encryption_text(meta, opts, "\n")))
    if st then
        out:write(string.format("keys %d\nfiles %d\nbytes %d\n", st.keys, st.files, st.live_bytes + st.dead_bytes))
    else
        out:write("(keys, files and bytes need the key: pass it with --key-env NAME)\n")
    end
    if rekeying and meta and meta.encrypted then
        out:write("(", rekey_hint(t.dbdir), ")\n")
    end
    return 0
end

function cmds.get(opts, pos)
    two_arg(pos, 2, "get")
    local t = resolve(pos[1], opts)
    need_collection(t, "get")
    local nl = opts["no-newline"] and "" or "\n"
    if t.kind == "store" then
        local s = open_store(t.dir, true, opts)
        local v, err = s:get(raw_key(t, opts, s, pos[2]))
        s:close()
        if err then
            failure("%s", err)
        elseif v == nil then
            failure("%s: not found", pos[2])
        end
        out:write(show(opts, v), nl)
        return 0
    end
    local coll, db = open_collection(t, true, opts)
    local v, err = coll:get(coll_key(t, pos[2]))
    db:close()
    if err then
        failure("%s", err)
    elseif v == nil then
        failure("%s: not found", pos[2])
    end
    local codec = t.spec.value
    out:write(codec == "raw" and v or coll_value_text(t, v), nl)
    return 0
end

local function read_stdin()
    io.stdin:setvbuf("full")
    return io.stdin:read("*a") or ""
end

function cmds.put(opts, pos)
    two_arg(pos, 3, "put")
    local t = resolve(pos[1], opts)
    need_collection(t, "put")
    local text = pos[3] == "-" and read_stdin() or pos[3]
    if t.kind == "store" then
        local s = open_store(t.dir, false, opts)
        local ok, v, err = pcall(function()
            local k = raw_key(t, opts, s, pos[2])
            local v = text
            if opts.hex then
                local e
                v, e = from_hex((text:gsub("%s+$", "")), "value")
                if not v then
                    usage_error("%s", e)
                end
            end
            return s:put(k, v)
        end)
        local _, cerr = s:close()
        if not ok then
            error(v, 0)
        end
        if not v then
            failure("%s", err)
        end
        if cerr then
            failure("%s", cerr)
        end
        return 0
    end
    local coll, db = open_collection(t, false, opts)
    local ok, r, err = pcall(function()
        return coll:put(coll_key(t, pos[2]), coll_value(t, text))
    end)
    db:close()
    if not ok then
        error(r, 0)
    end
    if not r then
        failure("%s", err)
    end
    return 0
end

function cmds.del(opts, pos)
    two_arg(pos, 2, "del")
    local t = resolve(pos[1], opts)
    need_collection(t, "del")
    local target, closer
    if t.kind == "store" then
        target = open_store(t.dir, false, opts)
        closer = target
    else
        target, closer = open_collection(t, false, opts)
    end
    local ok, r, err = pcall(function()
        local k = t.kind == "store" and raw_key(t, opts, target, pos[2]) or coll_key(t, pos[2])
        return target:delete(k)
    end)
    closer:close()
    if not ok then
        error(r, 0)
    end
    if r == nil then
        failure("%s", err)
    elseif r == false then
        failure("%s: not found", pos[2])
    end
    return 0
end

-- Open DIR (a store or a collection) read-only: an object with pairs(),
-- count(), close() and key/value text functions.
-- A scan bound of a raw store as bytes (given as hex with --hex).
local function raw_bound(opts, text, what)
    if not opts.hex then
        return text
    end
    local b, err = from_hex(text, what)
    if not b then
        usage_error("%s", err)
    end
    return b
end

-- r.pairs(scan): scan = { from, to, prefix, reverse } as given (text).
local function open_reader(t, opts)
    if t.kind == "store" then
        local s = open_store(t.dir, true, opts)
        local function txt(v)
            return opts.hex and to_hex(v) or escape(v)
        end
        local function pairs_of(sc)
            if not sc then
                return s:pairs()
            end
            return s:pairs({ lo = sc.from and raw_bound(opts, sc.from, "--from"),
                hi = sc.to and raw_bound(opts, sc.to, "--to"),
                prefix = sc.prefix and raw_bound(opts, sc.prefix, "--prefix"), reverse = sc.reverse })
        end
        return { pairs = pairs_of, count = function() return s:count() end,
            close = function() s:close() end, key_text = txt, value_text = txt }
    end
    local coll, db = open_collection(t, true, opts)
    local function pairs_of(sc)
        if not sc then
            return coll:pairs()
        end
        local o = { reverse = sc.reverse }
        if sc.prefix then
            return coll:prefix(sc.prefix, o)
        end
        if sc.from or sc.to then
            return coll:range(sc.from and coll_key(t, sc.from), sc.to and coll_key(t, sc.to), o)
        end
        return coll:pairs(o)
    end
    return { pairs = pairs_of, count = function() return coll:count() end,
        close = function() db:close() end,
        key_text = function(k) return coll_key_text(t, k) end,
        value_text = function(v) return coll_value_text(t, v) end }
end

-- Run fn(); close r whatever happens; rethrow fn's error.
local function with(r, fn)
    local ok, err = pcall(fn)
    r.close()
    if not ok then
        if type(err) == "table" and err.armdb_cli then
            error(err, 0)
        end
        failure("%s", clean_err(err))
    end
end

function cmds.scan(opts, pos)
    two_arg(pos, 1, "scan")
    local t = resolve(pos[1], opts)
    need_collection(t, "scan")
    local limit
    if opts.limit then
        limit = tonumber(opts.limit)
        if not limit or limit < 0 or limit ~= math.floor(limit) then
            usage_error("--limit needs a non-negative integer, got %s", opts.limit)
        end
    end
    if opts.prefix and (opts.from or opts.to) then
        usage_error("--prefix cannot go with --from or --to")
    end
    local sc
    if opts.from or opts.to or opts.prefix or opts.reverse then
        sc = { from = opts.from, to = opts.to, prefix = opts.prefix, reverse = opts.reverse or nil }
    end
    local r = open_reader(t, opts)
    out:setvbuf("full")
    with(r, function()
        local n = 0
        if limit == 0 then
            return
        end
        for k, v in r.pairs(sc) do
            if opts["keys-only"] then
                out:write(r.key_text(k), "\n")
            else
                out:write(r.key_text(k), "\t", r.value_text(v), "\n")
            end
            n = n + 1
            if limit and n >= limit then
                break
            end
        end
    end)
    return 0
end

-- ---- dump and load ----

local function dump_bytes(name, s, hex)
    if hex or not valid_utf8(s) then
        return '"' .. name .. '_hex":"' .. to_hex(s) .. '"'
    end
    return '"' .. name .. '":' .. json_string(s)
end

local function coll_dump_key(t, k)
    if INT_KEYS[t.spec.key] then
        if type(k) == "number" then
            return '"key":' .. string.format("%d", k)
        end
        return '"key":"' .. int_text(k) .. '"'
    end
    return dump_bytes("key", k, false)
end

local function coll_dump_value(t, v)
    local codec = t.spec.value
    if codec == "raw" then
        return dump_bytes("value", v, false)
    elseif codec == "number" then
        return '"value":' .. json_number(v)
    elseif codec == "json" then
        return '"value":' .. cjson().encode(v)
    elseif codec == "lua" then
        return '"value_hex":"' .. to_hex(require("string.buffer").encode(v)) .. '"'
    elseif type(v) == "cdata" then
        return '"value_hex":"' .. to_hex(ffi.string(v, ffi.sizeof(v))) .. '"'
    end
    return '"value":' .. cjson().encode(v)
end

function cmds.dump(opts, pos)
    two_arg(pos, 1, "dump")
    local t = resolve(pos[1], opts)
    need_collection(t, "dump")
    local r = open_reader(t, opts)
    local f = out
    if opts.output then
        local err
        f, err = io.open(opts.output, "wb")
        if not f then
            r.close()
            failure("cannot write %s", err)
        end
    end
    f:setvbuf("full")
    local bar = progress("dump", r.count())
    with(r, function()
        local n = 0
        for k, v in r.pairs() do
            local line
            if t.kind == "store" then
                line = "{" .. dump_bytes("key", k, opts.hex) .. "," .. dump_bytes("value", v, opts.hex) .. "}\n"
            else
                line = "{" .. coll_dump_key(t, k) .. "," .. coll_dump_value(t, v) .. "}\n"
            end
            local ok, err = f:write(line)
            if not ok then
                failure("cannot write %s: %s", opts.output or "stdout", tostring(err))
            end
            n = n + 1
            bar:step(n)
        end
    end)
    bar:done()
    if opts.output then
        local ok, err = f:close()
        if not ok then
            failure("cannot write %s: %s", opts.output, tostring(err))
        end
    else
        f:flush()
    end
    return 0
end

-- The bytes of the hex text in obj[name] (present), or nil, reason.
local function hex_field(obj, name)
    if type(obj[name]) ~= "string" then
        return nil, name .. " is not a string"
    end
    return from_hex(obj[name], name)
end

-- A decoded dump line -> key, value for DIR, or nil, reason.
local function load_pair(t, obj, key_len, json)
    if type(obj) ~= "table" then
        return nil, "not a JSON object"
    end
    local k, v, err
    if obj.key_hex ~= nil then
        k, err = hex_field(obj, "key_hex")
        if not k then
            return nil, err
        end
    elseif obj.key ~= nil then
        k = obj.key
    else
        return nil, 'no "key" or "key_hex"'
    end
    if obj.value_hex ~= nil then
        v, err = hex_field(obj, "value_hex")
        if not v then
            return nil, err
        end
        if t.kind == "collection" then
            local codec = t.spec.value
            if codec == "lua" then
                local ok, dv = pcall(require("string.buffer").decode, v)
                if not ok then
                    return nil, "value_hex is not a string.buffer encoding: " .. tostring(dv)
                end
                v = dv
            elseif codec ~= "raw" then
                local ok, cv = pcall(ffi.new, codec)
                if not ok or ffi.sizeof(cv) ~= #v then
                    return nil, "value_hex is not a " .. tostring(codec) .. " value"
                end
                ffi.copy(cv, v, #v)
                v = cv
            end
        end
    elseif obj.value ~= nil then
        v = obj.value
    else
        return nil, 'no "value" or "value_hex"'
    end
    if t.kind == "store" then
        if type(k) ~= "string" then
            return nil, "key is not a string"
        end
        if type(v) ~= "string" then
            return nil, "value is not a string"
        end
        if #k ~= key_len then
            return nil, string.format("key of %d bytes, the store has key_len %d", #k, key_len)
        end
        return k, v
    end
    local kc, vc = t.spec.key, t.spec.value
    if INT_KEYS[kc] then
        if type(k) == "string" then
            k = parse_int(k, kc)
            if k == nil then
                return nil, "key is not an integer"
            end
        elseif type(k) ~= "number" then
            return nil, "key is not an integer"
        end
    elseif type(k) ~= "string" then
        return nil, "key is not a string"
    end
    if vc == "number" and type(v) == "string" then
        v = ({ inf = math.huge, ["-inf"] = -math.huge, nan = 0 / 0 })[v] or tonumber(v)
        if v == nil then
            return nil, "value is not a number"
        end
    elseif vc == "raw" and type(v) ~= "string" then
        return nil, "value is not a string"
    end
    if v == json.null then
        return nil, "value is null"
    end
    return k, v
end

function cmds.load(opts, pos)
    two_arg(pos, 1, "load")
    if #pos > 2 then
        usage_error("too many arguments for load: %s", pos[3])
    end
    local t = resolve(pos[1], opts)
    need_collection(t, "load")
    local json = cjson()
    local file = pos[2] or "-"
    local f, name = io.stdin, "stdin"
    local size
    if file ~= "-" then
        local err
        f, err = io.open(file, "rb")
        if not f then
            failure("cannot read %s", err)
        end
        name = file
        size = f:seek("end")
        f:seek("set", 0)
        if size == 0 then
            size = nil
        end
    end
    local target, closer
    if t.kind == "store" then
        target = open_store(t.dir, false, opts)
        closer = target
    else
        target, closer = open_collection(t, false, opts)
    end
    local key_len = t.kind == "store" and target:stats().key_len
    local bar = progress("load", size)
    local lineno, loaded, bytes = 0, 0, 0
    local bad
    local ok, err = pcall(function()
        for line in f:lines() do
            lineno = lineno + 1
            bytes = bytes + #line + 1
            if line:find("%S") then
                local dok, obj = pcall(json.decode, line)
                local k, v
                if not dok then
                    v = "malformed JSON: " .. tostring(obj)
                else
                    k, v = load_pair(t, obj, key_len, json)
                end
                if k == nil then
                    bad = v
                    return
                end
                local r, perr = target:put(k, v)
                if not r then
                    bad = perr
                    return
                end
                loaded = loaded + 1
                bar:step(loaded, size and bytes)
            end
        end
    end)
    bar:done()
    if f ~= io.stdin then
        f:close()
    end
    local _, cerr = closer:close()
    if not ok then
        failure("%s:%d: %s", name, lineno, clean_err(err))
    end
    if bad then
        failure("%s:%d: %s (the %d %s before it %s loaded)", name, lineno, bad, loaded,
            loaded == 1 and "pair" or "pairs", loaded == 1 and "is" or "are")
    end
    if cerr then
        failure("%s", cerr)
    end
    return 0
end

-- ---- verify and stats ----

local function collection_dirs(t)
    if t.kind ~= "database" then
        return { { label = t.name, dir = t.dir, dbdir = t.dbdir } }
    end
    local cat = read_catalog(t.dir)
    local list = {}
    for name in pairs(cat.collections) do
        list[#list + 1] = { label = name, dir = t.dir .. "/" .. name, dbdir = t.dir }
    end
    table.sort(list, function(a, b) return a.label < b.label end)
    return list
end

function cmds.verify(opts, pos)
    two_arg(pos, 1, "verify")
    local t = resolve(pos[1], opts)
    local damaged = false
    for _, c in ipairs(collection_dirs(t)) do
        local s = open_store(c.dir, true, opts, c.dbdir)
        local st = s:stats()
        local bar = progress("verify", st.keys)
        local n, bytes, bad_entries, first_bad = 0, 0, 0, nil
        local ok, err = pcall(function()
            for k, v, msg in s:pairs({ errors = true }) do
                n = n + 1
                if v then
                    bytes = bytes + #k + #v
                else
                    bad_entries = bad_entries + 1
                    first_bad = first_bad or msg
                end
                bar:step(n)
            end
        end)
        bar:done()
        s:close()
        local prefix = c.label and ("[" .. c.label .. "] ") or ""
        out:write(string.format("%sentries %d\n%sbytes %d\n%sdamaged_entries %d\n%scorrupt_entries %d\n"
            .. "%storn_bytes %d\n", prefix, n, prefix, bytes, prefix, bad_entries, prefix, st.corrupt_entries,
            prefix, st.torn_bytes))
        if first_bad then
            out:write(prefix, "first_damage ", first_bad, "\n")
        end
        if not ok then
            out:write(prefix, "scan_error ", clean_err(err), "\n")
        end
        local bad = not ok or bad_entries > 0 or st.corrupt_entries > 0 or st.torn_bytes > 0
        out:write(prefix, bad and "damaged\n" or "ok\n")
        damaged = damaged or bad
    end
    out:flush()
    if damaged then
        failure("damage found in %s", t.dir)
    end
    return 0
end

local function stats_json(st)
    local names = {}
    for k in pairs(st) do
        names[#names + 1] = k
    end
    table.sort(names)
    local parts = {}
    for _, k in ipairs(names) do
        local v = st[k]
        local text = type(v) == "string" and json_string(v) or tostring(v)
        parts[#parts + 1] = json_string(k) .. ":" .. text
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

local function stats_text(st, prefix)
    local names = {}
    for k in pairs(st) do
        names[#names + 1] = k
    end
    table.sort(names)
    for _, k in ipairs(names) do
        out:write(prefix, k, " ", tostring(st[k]), "\n")
    end
end

function cmds.stats(opts, pos)
    two_arg(pos, 1, "stats")
    local t = resolve(pos[1], opts)
    if t.kind ~= "database" then
        local st = store_summary(t.dir, opts, t.dbdir)
        if opts.json then
            out:write(stats_json(st), "\n")
        else
            stats_text(st, "")
        end
        return 0
    end
    local parts = {}
    for _, c in ipairs(collection_dirs(t)) do
        local st = store_summary(c.dir, opts, c.dbdir)
        if opts.json then
            parts[#parts + 1] = json_string(c.label) .. ":" .. stats_json(st)
        else
            out:write("[", c.label, "]\n")
            stats_text(st, "")
        end
    end
    if opts.json then
        out:write("{", table.concat(parts, ","), "}\n")
    end
    return 0
end

-- ---- compact ----

function cmds.compact(opts, pos)
    two_arg(pos, 1, "compact")
    local t = resolve(pos[1], opts)
    for _, c in ipairs(collection_dirs(t)) do
        local s = open_store(c.dir, false, opts, c.dbdir)
        local before = s:stats()
        local ok, msg = s:compact()
        local st = s:stats()
        s:close()
        if not ok then
            failure("%s", msg)
        end
        if t.kind == "database" then
            out:write("[", c.label, "]\n")
        end
        out:write(string.format("files_compacted %d\nbytes_read %d\nbytes_written %d\nbytes_reclaimed %d\n",
            st.compactions, st.compact_bytes_read, st.compact_bytes_written, st.bytes_reclaimed))
        out:write(string.format("disk_before %d\ndisk_after %d\n", before.live_bytes + before.dead_bytes,
            st.live_bytes + st.dead_bytes))
    end
    return 0
end

-- ---- rekey ----

local timespec = ffi.new("armdb_cli_timespec")

-- Seconds, monotonic (CLOCK_MONOTONIC), for the times rekey reports.
local function now()
    local ok, rc = pcall(function()
        return ffi.C.clock_gettime(1, timespec)
    end)
    if not ok or rc ~= 0 then
        return os.time()
    end
    return tonumber(timespec.sec) + tonumber(timespec.nsec) * 1e-9
end

local function plural(n, one, many)
    return string.format("%d %s", n, n == 1 and one or many)
end

-- A progress reporter for database rotations: prints "[NAME] rekeyed:
-- N keys in S s" as each collection is done (db:rekey's on_done, the
-- on_rekey option of an open completing a rotation). done.n and done.keys
-- count them.
local function rekey_progress()
    local done, t0 = { n = 0, keys = 0 }, now()
    done.report = function(name, n)
        local t = now()
        done.n, done.keys = done.n + 1, done.keys + n
        out:write(string.format("[%s] rekeyed: %s in %.2f s\n", name, plural(n, "key", "keys"), t - t0))
        out:flush()
        t0 = t
    end
    return done
end

-- Close h after a rotation: a failed rotation (not ok: the message from
-- fmt, ...) or a failed close is the command's failure.
local function close_after(h, ok, fmt, ...)
    local _, cerr = h:close()
    if not ok then
        failure(fmt, ...)
    end
    if cerr then
        failure("%s", cerr)
    end
end

local function rekey_store(t, opts, old, new, t0)
    local dir = t.dir
    local meta = read_meta(dir)
    if meta and not meta.encrypted then
        failure("store %s is not encrypted: it has no key to rotate", dir)
    end
    local s, msg, code = armdb.store(dir, { create = false, encryption_key = old })
    if not s then
        if code == BADKEY then
            local s2 = armdb.store(dir, { read_only = true, create = false, encryption_key = new })
            if s2 then
                s2:close()
                out:write(string.format("store %s has the new key already: nothing to do\n", dir))
                return 0
            end
            failure("wrong key for store %s: neither the key in --key-env %s nor the one in --new-key-env %s"
                .. " opens it", dir, opts["key-env"], opts["new-key-env"])
        end
        open_failed(dir, opts, msg, code)
    end
    local ok, rmsg = s:rekey(new)
    local n = s:count()
    close_after(s, ok, "rekey of store %s failed, it keeps the old key: %s", dir, rmsg)
    out:write(string.format("rekeyed store %s: %s, cipher %s, in %.2f s\n", dir, plural(n, "key", "keys"),
        meta and meta.cipher or "?", now() - t0))
    return 0
end

local function rekey_db(t, opts, old, new, t0)
    local dbdir = t.dir
    local names = {}
    for name in pairs(read_catalog(dbdir).collections) do
        names[#names + 1] = name
    end
    table.sort(names)
    if #names == 0 then
        out:write(string.format("database %s has no collections: nothing to rekey\n", dbdir))
        return 0
    end
    local plain = {}
    for _, name in ipairs(names) do
        local meta = read_meta(dbdir .. "/" .. name)
        if meta and not meta.encrypted then
            plain[#plain + 1] = name
        end
    end
    if #plain == #names then
        failure("database %s is not encrypted: it has no key to rotate", dbdir)
    elseif #plain > 0 then
        failure("collection %s of database %s is not encrypted: it has no key to rotate", plain[1], dbdir)
    end
    -- Which collections the old key opens: those it does not open have the
    -- new one (checked below), left by a rotation cut short.
    local db = open_db(dbdir, false, opts)
    local on_new = {}
    for _, name in ipairs(names) do
        local coll, msg, code = db:collection(name)
        if coll == nil then
            if code ~= BADKEY then
                db:close()
                failure("%s", msg)
            end
            on_new[#on_new + 1] = name
        end
    end
    if #on_new == 0 then
        local done = rekey_progress()
        local ok, msg = db:rekey(new, done.report)
        close_after(db, ok, "rekey of database %s stopped (%s): run the same command again to complete it", dbdir,
            msg)
        out:write(string.format("rekeyed database %s: %s, %s, in %.2f s\n", dbdir,
            plural(#names, "collection", "collections"), plural(done.keys, "key", "keys"), now() - t0))
        return 0
    end
    db:close()
    for _, name in ipairs(on_new) do
        local dir = dbdir .. "/" .. name
        local s, msg, code = armdb.store(dir, { read_only = true, create = false, encryption_key = new })
        if s == nil then
            if code == BADKEY then
                failure("wrong key for collection %s of database %s: neither the key in --key-env %s nor the one"
                    .. " in --new-key-env %s opens it", name, dbdir, opts["key-env"], opts["new-key-env"])
            end
            failure("%s", msg)
        end
        s:close()
    end
    local rekeying = exists(dbdir .. "/REKEY")
    if #on_new == #names and not rekeying then
        out:write(string.format("database %s has the new key already: nothing to do\n", dbdir))
        return 0
    end
    for _, name in ipairs(on_new) do
        out:write(string.format("[%s] has the new key already\n", name))
    end
    out:flush()
    -- Opened with the new key and the old one as previous_key, the
    -- database rotates what is still on the old key (armdb.open does it
    -- when REKEY is there; opening every collection does it otherwise).
    local done = rekey_progress()
    do
        local ok, db2, msg, code = pcall(armdb.open, dbdir, { create = false, encryption_key = new,
            previous_key = old, on_rekey = done.report })
        if not ok then
            failure("cannot open database %s: %s", dbdir, clean_err(db2))
        end
        if db2 == nil then
            failure("completing the key rotation of database %s: %s", dbdir, msg or tostring(code))
        end
        for _, name in ipairs(names) do
            local coll, cmsg = db2:collection(name)
            if coll == nil then
                db2:close()
                failure("completing the key rotation of database %s: %s", dbdir, cmsg)
            end
        end
        local _, cerr = db2:close()
        if cerr then
            failure("%s", cerr)
        end
    end
    out:write(string.format("completed the key rotation of database %s that was cut short: %s (%d rotated now, %d"
        .. " had the new key already), %s, in %.2f s\n", dbdir, plural(#names, "collection", "collections"),
        done.n, #on_new, plural(done.keys, "key rotated", "keys rotated"), now() - t0))
    return 0
end

function cmds.rekey(opts, pos)
    two_arg(pos, 1, "rekey")
    if not opts["key-env"] or not opts["new-key-env"] then
        usage_error("rekey needs --key-env OLD and --new-key-env NEW, the environment variables that hold the"
            .. " keys (see armdb help rekey)")
    end
    local old, new = opts[KEY], env_key(opts, "new-key-env")
    if old == new then
        usage_error("--key-env %s and --new-key-env %s hold the same key: nothing to rotate", opts["key-env"],
            opts["new-key-env"])
    end
    local t = resolve(pos[1], opts)
    if t.kind == "collection" then
        usage_error("%s is collection %s of database %s, whose collections share one key: rekey the database"
            .. " (armdb rekey %s --key-env OLD --new-key-env NEW)", t.dir, t.name, t.dbdir, t.dbdir)
    end
    local t0 = now()
    if t.kind == "store" then
        return rekey_store(t, opts, old, new, t0)
    end
    return rekey_db(t, opts, old, new, t0)
end

-- ---- run ----

function cmds.run(opts, pos)
    if #pos < 2 then
        usage_error("run needs %s (see armdb help run)", BY_NAME.run.args)
    end
    local script = pos[1]
    local chunk, lerr = loadfile(script)
    if not chunk then
        failure("%s", lerr)
    end
    local t = resolve(pos[2], opts)
    local ro = opts["read-only"] or false
    local handle, closer
    if t.kind == "store" then
        handle = open_store(t.dir, ro, opts)
        closer = handle
    elseif t.kind == "database" then
        handle = open_db(t.dir, ro, opts)
        closer = handle
    else
        handle, closer = open_collection(t, ro, opts)
    end
    local ok, ret = xpcall(chunk, function(e)
        return e
    end, handle, unpack(pos, 3))
    local _, cerr = closer:close()
    if not ok then
        local msg = tostring(ret):match("^[^\n]*")
        if msg:sub(1, #script + 1) ~= script .. ":" then
            msg = script .. ": " .. msg
        end
        failure("%s", msg)
    end
    if cerr then
        failure("%s", cerr)
    end
    if type(ret) == "number" and ret == math.floor(ret) and ret >= 0 and ret <= 255 then
        return ret
    end
    return 0
end

function cmds.help(_, pos)
    local name = pos[1]
    if name == nil then
        out:write(general_help())
        return 0
    end
    local c = BY_NAME[name]
    if c == nil then
        usage_error("unknown command %s (see armdb --help)", name)
    end
    out:write(command_help(c))
    return 0
end

-- Run the command of argv (an array of strings, as the launcher's arg);
-- returns the exit status.
function M.main(argv)
    local ok, status = pcall(function()
        local cmd = argv[1]
        if cmd == nil then
            usage_error("no command given (see armdb --help)")
        end
        if cmd == "-h" or cmd == "--help" then
            out:write(general_help())
            return 0
        end
        if cmd == "--version" then
            out:write(string.format("armdb (ABI version %d, library %s)\n", armdb.abi_version,
                tostring(armdb.library)))
            return 0
        end
        if cmd:sub(1, 1) == "-" then
            usage_error("unknown option %s (see armdb --help)", cmd)
        end
        local fn = cmds[cmd]
        if fn == nil then
            usage_error("unknown command %s (see armdb --help)", cmd)
        end
        local opts, pos = parse_args(cmd, argv, 2)
        if opts.help then
            out:write(command_help(BY_NAME[cmd]))
            return 0
        end
        opts[KEY] = env_key(opts, "key-env")
        return fn(opts, pos)
    end)
    out:flush()
    if ok then
        return status
    end
    if type(status) == "table" and status.armdb_cli then
        io.stderr:write("armdb: ", (status.msg:gsub("\n", " ")), "\n")
        return status.status
    end
    io.stderr:write("armdb: ", clean_err(status), "\n")
    return FAIL
end

return M
