-- armdb.cli: the `armdb` command (bin/armdb is only its launcher).
--
-- M.main(argv) runs one command and returns its exit status: 0 on
-- success, 1 when the command failed (no such store, a locked store, a
-- missing key, a record import rejected, damage found by verify), 2 for a
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
-- Read-only commands (info, get, scan, export, verify, stats) open stores
-- read-only: they take no lock and work beside a live writer process, and
-- see the store as it was at open. put, del, import and compact open for
-- writing. export, import, verify, stats and compact are the jobs of
-- armdb.jobs (callable from Lua too); dump and load are other names of
-- export and import. add_command adds a command (with its help text).
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
local sorted_keys = require("armdb.util").sorted_keys

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
    { name = "export", args = "DIR", summary = "write every pair as JSON lines (also: dump)",
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
to stderr when it is a terminal. Opens read-only. From Lua:
require("armdb.jobs").export(store_or_collection, out, opts).

  -o, --output FILE   write to FILE instead of stdout]] },
    { name = "import", args = "DIR [FILE|-]", summary = "put the pairs of JSON lines into DIR (also: load)",
      text = [[
Reads JSON lines as export writes them (from FILE, or stdin if FILE is "-"
or absent) and puts each pair into DIR. Each object needs "key" or "key_hex"
and "value" or "value_hex". Empty lines are skipped.

Each record is checked before anything of it is written: its JSON, its
fields, its hex, and its key and value against DIR: for a raw store a key of
key_len bytes (and a value of value_len bytes if values are fixed); for a
collection what its key and value codecs take (an integer key in range, a
string(N) key of at most N bytes, a number, a struct of its size). A bad
record does not stop the import: it is reported on stderr as
"FILE:LINE: REASON" and the lines after it are imported. At the end a
summary goes to stdout, one NAME VALUE line each: imported, rejected. If a
record was rejected, the last line on stderr is "armdb: FILE: N of M records
rejected" and the exit status is 1. The pairs imported are durable when
the command exits. A failure of the store itself (a full disk) stops the
import at its line: "armdb: FILE:LINE: ...", exit status 1.

An import is idempotent by key: run again over the same input, after a
complete run or one cut short (a crash, kill -9), it leaves the store as one
complete run does. Keys the input does not name are not touched. A progress
bar goes to stderr when it is a terminal. Opens for writing. From Lua:
require("armdb.jobs").import(store_or_collection, input, opts).

  --max-rejects N   stop after N rejected records]] },
    { name = "verify", args = "DIR", summary = "check every entry, page and hint of every data file",
      text = [[
Checks every data file of DIR, live entries and dead ones: the checksum of
every entry, the authentication tag of every page of an encrypted store,
every hint file, and each data file's length against its hint. A database
is verified collection by collection. Output, one NAME VALUE line each:
entries (intact entries, live or dead), files, bytes (of data files), pages
(sealed pages checked), hints (intact hint files), damaged_entries,
damaged_pages, damaged_hints, short_files (data files shorter than their
hint says), unread_files (files a read of failed: the error is in their
damage line), corrupt_entries and torn_bytes (damage counted when DIR was
opened: entries of immutable files that failed their checksum, bytes cut
from a torn tail); then a line for each damage found, with the file and
(but for a damaged hint) the byte offset in it,
  damage PATH: offset N: WHAT IS WRONG
and "ok" or "damaged" (every line prefixed by "[NAME] " for a collection of
a database). Exit status 0 if all is clean; 1 if damage was found, with the
line "armdb: damage found in DIR" on stderr. Opens read-only: it works
beside a writer, and sees the store as it was at the open. A progress bar
goes to stderr when it is a terminal. From Lua:
require("armdb.jobs").verify(target).

  --json           print one JSON object instead: the counters, ok, and
                   "damages", an array of {"path", "shard", "file", "what",
                   "offset", "length", "message"} (for a database: an object
                   of the collections' objects)]] },
    { name = "stats", args = "DIR", summary = "print the store's counters",
      text = [[
Prints the counters and state of the store (armdb_stat) as NAME VALUE lines,
sorted by name; for a database, those of each collection under a "[NAME]"
line. Opens read-only. From Lua: require("armdb.jobs").stats(target).

  --json           print one JSON object instead (for a database: an object
                   of the collections' objects)]] },
    { name = "compact", args = "DIR", summary = "reclaim the space of overwritten and deleted entries",
      text = [[
Compacts DIR now (armdb_compact): every data file holding overwritten or
deleted entries is rewritten without them and removed. A database is
compacted collection by collection. Prints, one NAME VALUE line each (under
"[NAME]" for each collection of a database): files_compacted, bytes_read,
bytes_written, bytes_reclaimed, disk_before and disk_after (bytes of data
files). Opens for writing: fails if another process writes the store. From
Lua: require("armdb.jobs").compact(target).]] },
    { name = "sweep", args = "DIR", summary = "purge the expired values (ttl) of a database now",
      text = [[
Runs the TTL sweep of every collection of the database DIR that keeps
expiries (created with a ttl), each to its end: every value whose expiry
has passed is deleted. Reads never return expired values anyway; the sweep
gives their space back (to compaction) and takes them out of counts. Prints
"purged N" and, per collection with expiries, "collection NAME N". Opens for
writing. From Lua: require("armdb.jobs").sweep(db); a long-running process
runs the same sweep in slices through the scheduler (armdb.jobs.scheduler).]] },
    { name = "backup", args = "DIR DEST", summary = "an online, consistent copy of a store or database",
      text = [[
Copies the store or database DIR into the new directory DEST while writes go
on, as it was at one GSN: every write up to it, none after, a batch whole or
not at all. The cut is taken for every collection at once (a barrier on each
shard); the files are then copied (immutable ones may be hard-linked with
--link), with a progress bar on stderr when it is a terminal. The copy is
built in DEST.partial and renamed to DEST when complete, with a manifest,
DEST/BACKUP, naming the GSN of each collection. An interrupted backup leaves
DEST.partial, which the next run removes before starting again. Prints:
kind, gsn, bytes (copied), and per collection "collection NAME GSN".

--incremental brings the backup at DEST up to date from DIR's change feed
(changes since the GSN in its manifest, applied with their GSNs). Cut short,
it is run again: applying a change twice is harmless. If DIR no longer keeps
the changes since the backup (compaction removed a delete after it), it
says so, and a full backup is needed. Prints: kind, gsn, changes (applied).

Opens DIR for writing (the cut needs the writer's barriers): fails if
another process writes it; back it up from that process then
(require("armdb.jobs").backup(db, dest)). An encrypted backup keeps DIR's
key. From Lua: require("armdb.jobs").backup(store_or_db, dest, opts).

  --incremental    update the backup at DEST from the change feed
  --link           hard-link immutable files instead of copying them (same
                   file system; a copy that shares the disk of DIR)]] },
    { name = "restore", args = "BACKUP DIR", summary = "copy a backup into a new store or database",
      text = [[
Copies the complete backup BACKUP (made by armdb backup) into the new
directory DIR (through DIR.partial, synced, renamed when complete), then
opens every store of it to see that it opens whole. Refuses a backup whose
incremental update was cut short (run the backup again first). Prints: kind,
gsn, bytes, and per collection "collection NAME GSN KEYS".

--check SOURCE then compares DIR with SOURCE, the store or database the
backup was taken of (opened read-only, so it may be in use): every key that
SOURCE has not written since the backup's GSN must have the same value in
both, and be in both or neither. Prints compared, changed_since (skipped) and
mismatched, with the first mismatches, and exits 1 if any. From Lua:
require("armdb.jobs").restore(backup, dir, opts) and .check(dir, source).

  --check SOURCE   compare the restored copy with its source]] },
    { name = "replicate", args = "serve DIR|follow ADDR DIR", summary = "serve DIR to read replicas, or be one",
      text = [[
  armdb replicate serve DIR [--addr HOST:PORT] [--secret-file FILE]
  armdb replicate follow ADDR DIR [--secret-file FILE]

serve: serves the database (or raw store) DIR to read replicas on --addr
(default 127.0.0.1:0, a free port of loopback), every collection under its
name, until SIGINT or SIGTERM. Prints "serving DIR on HOST:PORT" on stdout,
then a status line on stderr: every second when stderr is a terminal, else
when it changes (followers, their states and positions). Opens DIR for
writing: fails if another process writes it (serve it from that process
then: db:serve_replication(addr, opts)). A raw store is served under the
last part of its path, or --name NAME.

follow: makes DIR a read replica of the database served at ADDR: fetches its
catalog, creates or opens every collection's store as a replica (readers
may open it read-only meanwhile; writes are refused) and applies the
leader's writes as they come, reconnecting when the connection is lost.
Prints "following ADDR into DIR" on stdout, then status lines on stderr as
serve does (each collection's state, applied GSN and lag). --name NAME
follows the raw store NAME of the leader into DIR instead, a store of the
leader's shape: it exists already, or give --key-len, --value-len and
--shards.

Both stop on SIGINT or SIGTERM: followers and servers first, then the
stores, closed cleanly (exit status 0). Without a secret the leader serves
loopback addresses only. With --secret-file FILE (its whole content, less a
final newline: 16 to 1024 bytes, the same on both sides; the file must not
be readable by group or others) a follower proves it holds the secret, and
every frame is encrypted. From Lua: db:serve_replication(addr, opts) and
armdb.open(dir, { follow = addr, secret = ... }).

  --addr HOST:PORT     serve: the address to listen on
  --secret-file FILE   the shared secret is the content of FILE
  --name NAME          a raw store's name (serve: the name it is served under)
  --key-len N, --value-len N, --shards N
                       follow --name: the shape of a store to create]] },
    { name = "status", args = "DIR", summary = "the replication role and position of each store",
      text = [[
For the database, collection or raw store DIR, prints for each store: role
(leader, follower or none), running (yes when the process serving or
following it updated its status within the last 5 seconds), last_gsn (the
largest GSN of the store, opened read-only, which works beside a running
writer; an encrypted store needs --key-env), then each line of the status
files the library writes in the store's directory about once a second:
"replica NAME VALUE" from REPLICA (a follower's state, leader, positions)
and "replication NAME VALUE" from REPLICATION (a leader's followers, one
"replication follower ..." line each). Database lines start with "[NAME] ".

  --json           one JSON object (for a database: one per collection)]] },
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

-- Other names of commands (kept for scripts written before the new ones):
-- listed and helped like their command, run by it.
local ALIASES = { dump = "export", load = "import" }

-- Add a command: { name, args, summary, text, run = function(opts, pos)
-- returning the exit status, options = { NAME = takes a value }, short =
-- { LETTER = NAME } }, listed before help. (backup, restore and the like
-- plug in here.)
local cmds = {}
local OPTIONS, SHORT = {}, {}
local BY_NAME = {}

local function add_command(c)
    local at = #COMMANDS + 1
    for i, other in ipairs(COMMANDS) do
        if other.name == "help" then
            at = i
        end
    end
    table.insert(COMMANDS, at, c)
    OPTIONS[c.name] = c.options
    for letter, long in pairs(c.short or {}) do
        SHORT[letter] = long
    end
    cmds[c.name] = c.run
    BY_NAME[c.name] = c
end
M.add_command = add_command

do
    local list = {}
    for _, c in ipairs(COMMANDS) do
        list[#list + 1] = c
        for alias, of in pairs(ALIASES) do
            if of == c.name then
                list[#list + 1] = { name = alias, args = c.args, alias_of = c.name,
                    summary = "the same as " .. c.name,
                    text = "Another name for `armdb " .. c.name .. "`.\n\n" .. c.text }
            end
        end
    end
    COMMANDS = list
end

for _, c in ipairs(COMMANDS) do
    BY_NAME[c.name] = c
end
BY_NAME.help = { name = "help", args = "[COMMAND]", summary = "show help for a command",
    text = "Shows the help of COMMAND, or the list of commands." }
table.insert(COMMANDS, BY_NAME.help)

local function general_help()
    local lines = {}
    for _, c in ipairs(COMMANDS) do
        lines[#lines + 1] = string.format("  %-9s %-26s %s", c.name, c.args, c.summary)
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
OPTIONS.get = { ["no-newline"] = false }
OPTIONS.scan = { limit = true, ["keys-only"] = false, from = true, to = true, prefix = true, reverse = false }
OPTIONS.export = { output = true }
OPTIONS.import = { ["max-rejects"] = true }
OPTIONS.verify = { json = false }
OPTIONS.stats = { json = false }
OPTIONS.run = { ["read-only"] = false }
OPTIONS.rekey = { ["new-key-env"] = true }
OPTIONS.backup = { incremental = false, link = false }
OPTIONS.restore = { check = true }
OPTIONS.replicate = { addr = true, ["secret-file"] = true, name = true, ["key-len"] = true, ["value-len"] = true,
    shards = true }
OPTIONS.status = { json = false }
SHORT.c, SHORT.h, SHORT.n, SHORT.o = "collection", "help", "no-newline", "output"
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

local json_number = require("armdb.jobs.jsonl").json_number

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

local dirname = require("armdb.fs").dirname

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

-- ---- codecs of collections, in text ----

local INT_KEYS = { u32 = true, u64 = true, i64 = true }

local parse_int, int_text = require("armdb.jobs.jsonl").parse_int, require("armdb.jobs.jsonl").int_text

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
    if #pos > n and not (cmd == "import" and n == 1) then
        usage_error("too many arguments for %s: %s", cmd, pos[n + 1])
    end
end

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
        local names = sorted_keys(cat.collections)
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

-- ---- export, import, verify, stats and compact: the jobs of armdb.jobs ----

local function jobs()
    return require("armdb.jobs")
end

-- DIR (a store or a collection) opened: the handle a job takes, and what
-- closes it.
local function open_target(t, opts, read_only)
    if t.kind == "store" then
        local s = open_store(t.dir, read_only, opts)
        return s, s
    end
    local coll, db = open_collection(t, read_only, opts)
    return coll, db
end

function cmds.export(opts, pos)
    two_arg(pos, 1, "export")
    local t = resolve(pos[1], opts)
    need_collection(t, "export")
    if t.kind == "collection" then
        cjson()
    end
    local target, closer = open_target(t, opts, true)
    out:setvbuf("full")
    local ok, r, msg = pcall(jobs().export, target, opts.output or out, { hex = opts.hex, progress = true })
    closer:close()
    if not ok then
        failure("%s", clean_err(r))
    elseif not r then
        failure("%s", msg)
    end
    return 0
end

function cmds.import(opts, pos)
    two_arg(pos, 1, "import")
    if #pos > 2 then
        usage_error("too many arguments for import: %s", pos[3])
    end
    local max
    if opts["max-rejects"] then
        max = tonumber(opts["max-rejects"])
        if not max or max < 1 or max ~= math.floor(max) then
            usage_error("--max-rejects needs a positive integer, got %s", opts["max-rejects"])
        end
    end
    local t = resolve(pos[1], opts)
    need_collection(t, "import")
    cjson()
    local file = pos[2] or "-"
    local input, name = io.stdin, "stdin"
    if file ~= "-" then
        local f, err = io.open(file, "rb")
        if not f then
            failure("cannot read %s", err)
        end
        f:close()
        input, name = file, file
    end
    local target, closer = open_target(t, opts, false)
    local function on_reject(line, reason)
        io.stderr:write(name, ":", line, ": ", (reason:gsub("\n", " ")), "\n")
    end
    local ok, r, msg, _, partial = pcall(jobs().import, target, input, { name = name, progress = true,
        max_rejects = max, on_reject = on_reject })
    local _, cerr = closer:close()
    if not ok then
        failure("%s", clean_err(r))
    end
    local done = r or partial
    if done then
        out:write(string.format("imported %d\nrejected %d\n", done.imported, done.rejected))
        out:flush()
    end
    if not r then
        failure("%s", msg)
    end
    if cerr then
        failure("%s", cerr)
    end
    if r.rejected > 0 then
        failure("%s: %d of %d records rejected%s", name, r.rejected, r.imported + r.rejected,
            r.stopped and " (stopped at --max-rejects)" or "")
    end
    return 0
end

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

local VERIFY_LINES = { "entries", "files", "bytes", "pages", "hints", "damaged_entries", "damaged_pages",
    "damaged_hints", "short_files", "unread_files", "corrupt_entries", "torn_bytes" }

local function verify_json(r, ok)
    local j = jobs()
    local flat = { ok = ok }
    for _, k in ipairs(VERIFY_LINES) do
        flat[k] = r[k]
    end
    flat.damage = r.damage
    local ds = {}
    for i, d in ipairs(r.damages) do
        ds[i] = j.stats_json({ path = d.path, shard = d.shard, file = d.file, what = d.what, offset = d.offset,
            length = d.length, message = d.message })
    end
    return j.stats_json(flat):sub(1, -2) .. ',"damages":[' .. table.concat(ds, ",") .. "]}"
end

function cmds.verify(opts, pos)
    two_arg(pos, 1, "verify")
    local t = resolve(pos[1], opts)
    local damaged = false
    local parts = {}
    for _, c in ipairs(collection_dirs(t)) do
        local s = open_store(c.dir, true, opts, c.dbdir)
        local ok, r, msg = pcall(jobs().verify, s, { progress = true })
        s:close()
        if not ok then
            failure("%s", clean_err(r))
        elseif not r then
            failure("%s", msg)
        end
        local good = r.ok and r.corrupt_entries == 0 and r.torn_bytes == 0
        damaged = damaged or not good
        if opts.json then
            parts[#parts + 1] = (t.kind == "database" and require("armdb.jobs.jsonl").json_string(c.label) .. ":"
                or "") .. verify_json(r, good)
        else
            local prefix = t.kind == "database" and ("[" .. c.label .. "] ") or ""
            for _, k in ipairs(VERIFY_LINES) do
                out:write(prefix, k, " ", string.format("%d", r[k]), "\n")
            end
            for _, d in ipairs(r.damages) do
                out:write(prefix, "damage ", d.path, ": ", d.message, "\n")
            end
            out:write(prefix, good and "ok\n" or "damaged\n")
        end
    end
    if opts.json then
        out:write(t.kind == "database" and "{" .. table.concat(parts, ",") .. "}\n" or parts[1] .. "\n")
    end
    out:flush()
    if damaged then
        failure("damage found in %s", t.dir)
    end
    return 0
end

function cmds.stats(opts, pos)
    two_arg(pos, 1, "stats")
    local t = resolve(pos[1], opts)
    local j = jobs()
    local all, one = {}, nil
    for _, c in ipairs(collection_dirs(t)) do
        one = store_summary(c.dir, opts, c.dbdir)
        all[c.label or ""] = one
    end
    if t.kind ~= "database" then
        out:write(opts.json and j.stats_json(one) .. "\n" or j.stats_text(one))
    else
        out:write(opts.json and j.stats_json(all) .. "\n" or j.stats_text(all))
    end
    return 0
end

local COMPACT_LINES = { "files_compacted", "bytes_read", "bytes_written", "bytes_reclaimed", "disk_before",
    "disk_after" }

function cmds.compact(opts, pos)
    two_arg(pos, 1, "compact")
    local t = resolve(pos[1], opts)
    for _, c in ipairs(collection_dirs(t)) do
        local s = open_store(c.dir, false, opts, c.dbdir)
        local r, msg = jobs().compact(s)
        s:close()
        if not r then
            failure("%s", msg)
        end
        if t.kind == "database" then
            out:write("[", c.label, "]\n")
        end
        for _, k in ipairs(COMPACT_LINES) do
            out:write(k, " ", string.format("%d", r[k]), "\n")
        end
    end
    return 0
end

-- ---- sweep ----

function cmds.sweep(opts, pos)
    two_arg(pos, 1, "sweep")
    local t = resolve(pos[1], opts)
    if t.kind ~= "database" then
        usage_error("%s is a %s: sweep works on a database (its collections keep the expiries)", t.dir, t.kind)
    end
    local db = open_db(t.dir, false, opts)
    local r, msg = jobs().sweep(db, { progress = true })
    db:close()
    if not r then
        failure("%s", msg)
    end
    out:write(string.format("purged %d\n", r.purged))
    local names = sorted_keys(r.collections)
    for _, name in ipairs(names) do
        out:write(string.format("collection %s %d\n", name, r.collections[name]))
    end
    return 0
end

-- ---- backup and restore ----

local function open_whole(dir, read_only, opts)
    local t = resolve(dir, opts)
    if t.kind == "collection" then
        usage_error("%s is collection %s of database %s: back up the database (armdb backup %s DEST)", t.dir,
            t.name, t.dbdir, t.dbdir)
    end
    if t.kind == "database" then
        return open_db(t.dir, read_only, opts), t
    end
    return open_store(t.dir, read_only, opts), t
end

local function print_collections(r, with_keys)
    local names = sorted_keys(r.collections)
    for _, name in ipairs(names) do
        local c = r.collections[name]
        if with_keys then
            out:write(string.format("collection %s %d %d\n", name == "" and "-" or name, c.gsn, c.keys))
        else
            out:write(string.format("collection %s %d\n", name == "" and "-" or name, c))
        end
    end
end

function cmds.backup(opts, pos)
    two_arg(pos, 2, "backup")
    local h = open_whole(pos[1], false, opts)
    local r, msg = jobs().backup(h, pos[2], { incremental = opts.incremental == true, link = opts.link == true,
        progress = true, encryption_key = opts[KEY] })
    h:close()
    if not r then
        failure("%s", msg)
    end
    out:write("kind ", r.kind, "\n", string.format("gsn %d\n", r.gsn))
    if r.incremental then
        out:write(string.format("changes %d\n", r.changes))
    else
        out:write(string.format("bytes %d\n", r.bytes))
    end
    print_collections(r, false)
    return 0
end

function cmds.restore(opts, pos)
    two_arg(pos, 2, "restore")
    local r, msg = jobs().restore(pos[1], pos[2], { progress = true, encryption_key = opts[KEY] })
    if not r then
        failure("%s", msg)
    end
    out:write("kind ", r.kind, "\n", string.format("gsn %d\nbytes %d\n", r.gsn, r.bytes))
    print_collections(r, true)
    if opts.check then
        local src = open_whole(opts.check, true, opts)
        local c, cmsg = jobs().check(pos[2], src, { encryption_key = opts[KEY], gsn = nil, samples = 10,
            manifest = pos[1] })
        src:close()
        if not c then
            failure("%s", cmsg)
        end
        out:write(string.format("compared %d\nchanged_since %d\nmismatched %d\n", c.compared, c.changed_since,
            c.mismatched))
        for _, line in ipairs(c.samples) do
            out:write("mismatch ", line, "\n")
        end
        out:flush()
        if not c.ok then
            failure("%s differs from %s%s", pos[2], opts.check, c.unknown and " (the changes since the backup are"
                .. " no longer all known, so some may be newer writes)" or "")
        end
    end
    return 0
end

-- ---- replication ----

local SIG_BLOCK, SIGINT, SIGTERM, SIGPIPE = 0, 2, 15, 13
local SIG_NAMES = { [SIGINT] = "SIGINT", [SIGTERM] = "SIGTERM" }
local sigs -- what block_signals made: the set waited for, a timeout

-- Block SIGINT and SIGTERM (and SIGPIPE) in this thread, and so in the
-- threads the library starts after it: they stay pending until
-- next_signal takes them, so that nothing stops midway. (LuaJIT has no
-- signal API: sigprocmask and sigtimedwait through the FFI.)
local function block_signals()
    pcall(ffi.cdef, [[
        typedef struct { unsigned long val[16]; } armdb_cli_sigset;
        typedef struct { long sec, nsec; } armdb_cli_sigtime;
        int sigemptyset(armdb_cli_sigset *set);
        int sigaddset(armdb_cli_sigset *set, int signo);
        int sigprocmask(int how, const armdb_cli_sigset *set, armdb_cli_sigset *old);
        int sigtimedwait(const armdb_cli_sigset *set, void *info, const armdb_cli_sigtime *timeout);
    ]])
    local set, block = ffi.new("armdb_cli_sigset"), ffi.new("armdb_cli_sigset")
    ffi.C.sigemptyset(set)
    ffi.C.sigaddset(set, SIGINT)
    ffi.C.sigaddset(set, SIGTERM)
    ffi.copy(block, set, ffi.sizeof(set))
    ffi.C.sigaddset(block, SIGPIPE)
    if ffi.C.sigprocmask(SIG_BLOCK, block, nil) ~= 0 then
        failure("cannot block SIGINT and SIGTERM: errno %d", ffi.errno())
    end
    sigs = { set = set, ts = ffi.new("armdb_cli_sigtime") }
end

-- Wait up to ms for SIGINT or SIGTERM: its number, or nil.
local function next_signal(ms)
    sigs.ts.sec, sigs.ts.nsec = math.floor(ms / 1000), (ms % 1000) * 1000000
    local r = ffi.C.sigtimedwait(sigs.set, nil, sigs.ts)
    return r > 0 and r or nil
end

-- The mode bits of path (statx: its layout is the same on every
-- architecture), or nil if it cannot be read.
local function file_mode(path)
    local ok = pcall(ffi.cdef, "int statx(int dirfd, const char *path, int flags, unsigned int mask, void *buf);")
    local buf = ffi.new("uint8_t[256]")
    ok = pcall(function()
        ok = ffi.C.statx(-100, path, 0, 2, buf) == 0 -- AT_FDCWD, STATX_MODE
    end) and ok
    if not ok then
        return nil
    end
    return ffi.cast("uint16_t *", buf + 28)[0] -- stx_mode
end

-- The secret of --secret-file: the file's content less a final newline.
local function read_secret(path)
    local f, err = io.open(path, "rb")
    if f == nil then
        failure("--secret-file: %s", err)
    end
    local text = f:read("*a") or ""
    f:close()
    local mode = file_mode(path)
    if mode == nil then
        failure("--secret-file %s: cannot read its permissions", path)
    end
    if bit.band(mode, 36) ~= 0 then -- 0044
        failure("--secret-file %s is readable by group or others (mode %03o): chmod 600 %s", path,
            bit.band(mode, 511), path)
    end
    text = text:gsub("\r?\n$", "")
    if #text < 16 or #text > 1024 then
        failure("--secret-file %s holds %d bytes: a secret is 16 to 1024 bytes", path, #text)
    end
    return text
end

local function is_terminal(fd)
    local ok, r = pcall(function() return ffi.C.isatty(fd) end)
    return ok and r == 1
end

-- Status lines on stderr: each second on a terminal (over the last one),
-- else a line when what it says (less its times) changes.
local function status_printer()
    local tty, last = is_terminal(2), nil
    return function(line, key)
        if tty then
            io.stderr:write("\r", line, "\27[K")
        elseif key ~= last then
            io.stderr:write(line, "\n")
        end
        last = key
        io.stderr:flush()
    end, function()
        if tty then
            io.stderr:write("\n")
        end
    end
end

local function server_line(st)
    local parts = { string.format("followers %d (accepted %d, refused %d, failed %d)", st.followers, st.accepted,
        st.refused, st.failed) }
    local keys = { parts[1] }
    for _, p in ipairs(st.peers) do
        local fixed = string.format("%s <- %s %s acked %d lag %d", p.store, p.addr, p.state, p.acked_gsn, p.lag_gsn)
        keys[#keys + 1] = fixed
        parts[#parts + 1] = fixed .. string.format(" (%d ms)", p.lag_ms)
    end
    if st.last_error then
        parts[#parts + 1] = "last error: " .. st.last_error
        keys[#keys + 1] = parts[#parts]
    end
    return table.concat(parts, "; "), table.concat(keys, "; ")
end

local function follower_line(per)
    local parts = {}
    for _, name in ipairs(sorted_keys(per)) do
        local t = per[name]
        parts[#parts + 1] = string.format("[%s] %s applied %d leader %d lag %d%s", name, t.state, t.applied_gsn,
            t.leader_gsn, t.lag_gsn, t.last_error and " (" .. t.last_error .. ")" or "")
    end
    local line = #parts > 0 and table.concat(parts, "; ") or "no collections yet"
    return line, line
end

local function whole_number(opts, name)
    local v = opts[name]
    if v == nil then
        return nil
    end
    local n = tonumber(v)
    if n == nil or n < 0 or n ~= math.floor(n) then
        usage_error("--%s must be a whole number, got %s", name, v)
    end
    return n
end

local function replicate_serve(opts, pos)
    if #pos ~= 2 then
        usage_error("replicate serve needs DIR (see armdb help replicate)")
    end
    if opts["key-len"] or opts["value-len"] or opts.shards then
        usage_error("--key-len, --value-len and --shards are for replicate follow --name (a store to create)")
    end
    local t = resolve(pos[2], opts)
    if t.kind == "collection" then
        usage_error("%s is collection %s of database %s: serve the database (armdb replicate serve %s)", t.dir,
            t.name, t.dbdir, t.dbdir)
    end
    if opts.name and t.kind ~= "store" then
        usage_error("--name is for a raw store; %s is a database (its collections are served under their names)",
            t.dir)
    end
    local secret = opts["secret-file"] and read_secret(opts["secret-file"])
    block_signals()
    local h = t.kind == "database" and open_db(t.dir, false, opts) or open_store(t.dir, false, opts)
    local so = { secret = secret }
    if t.kind == "store" then
        so.name = opts.name
    end
    local ok, srv, msg = pcall(h.serve_replication, h, opts.addr, so)
    if not ok or not srv then
        h:close()
        failure("%s", ok and msg or clean_err(srv))
    end
    out:write("serving ", t.dir, " on ", srv.addr, "\n")
    out:flush()
    local print_status, done = status_printer()
    local sig, first = nil, true
    repeat
        if not first then
            sig = next_signal(1000) -- (the status once more after the signal: how it ends)
        end
        first = false
        local st = srv:stats()
        if st then
            print_status(server_line(st))
        end
    until sig
    done()
    srv:close()
    local _, cerr = h:close()
    io.stderr:write("armdb: ", SIG_NAMES[sig] or tostring(sig), ": stopped serving ", t.dir, "\n")
    if cerr then
        failure("%s", cerr)
    end
    return 0
end

local function replicate_follow(opts, pos)
    if #pos ~= 3 then
        usage_error("replicate follow needs ADDR DIR (see armdb help replicate)")
    end
    local addr, dir = pos[2], pos[3]
    if opts.addr then
        usage_error("--addr is for replicate serve; a follower is given the leader's address as ADDR")
    end
    local secret = opts["secret-file"] and read_secret(opts["secret-file"])
    local key_len, value_len, shards = whole_number(opts, "key-len"), whole_number(opts, "value-len"),
        whole_number(opts, "shards")
    if (key_len or value_len or shards) and not opts.name then
        usage_error("--key-len, --value-len and --shards are for a raw store (--name NAME)")
    end
    block_signals()
    local ok, h, msg, code
    if opts.name then
        ok, h, msg, code = pcall(armdb.store, dir, { follow = addr, name = opts.name, secret = secret,
            key_len = key_len, value_len = value_len, shards = shards, encryption_key = opts[KEY] })
    else
        ok, h, msg, code = pcall(armdb.open, dir, { follow = addr, secret = secret, encryption_key = opts[KEY] })
    end
    if not ok then
        failure("%s", clean_err(h))
    end
    if not h then
        if code == BADKEY and msg:find("secret", 1, true) then -- the replication secret, not a store key
            failure("%s", msg)
        end
        open_failed(dir, opts, msg, code, nil, opts.name and "store" or "database")
    end
    out:write("following ", addr, " into ", dir, "\n")
    out:flush()
    local print_status, done = status_printer()
    local sig
    local ticks = 0
    repeat
        if ticks > 0 then
            sig = next_signal(1000) -- (the status once more after the signal: how it ends)
        end
        if not opts.name and ticks % 10 == 9 then
            h:follow_catalog() -- collections the leader created since (a failure shows in the stats)
        end
        local per
        if opts.name then
            local st = h:replication()
            per = st and { [opts.name] = st } or {}
        else
            per = h:replication() or {}
        end
        print_status(follower_line(per))
        ticks = ticks + 1
    until sig
    done()
    local _, cerr = h:close()
    io.stderr:write("armdb: ", SIG_NAMES[sig] or tostring(sig), ": stopped following ", addr, "\n")
    if cerr then
        failure("%s", cerr)
    end
    return 0
end

function cmds.replicate(opts, pos)
    local sub = pos[1]
    if sub == "serve" then
        return replicate_serve(opts, pos)
    elseif sub == "follow" then
        return replicate_follow(opts, pos)
    end
    usage_error("replicate needs serve or follow, got %s (see armdb help replicate)", tostring(sub))
end

-- ---- status ----

local RUNNING_MS = 5000

-- JSON of a status value: strings, numbers, booleans, arrays (tables with
-- [1]) and objects (keys sorted).
local function to_json(v)
    local tv = type(v)
    if tv == "string" then
        return require("armdb.jobs.jsonl").json_string(v)
    elseif tv == "number" then
        return v == math.floor(v) and string.format("%d", v) or string.format("%.17g", v)
    elseif tv ~= "table" then
        return tostring(v)
    end
    local parts = {}
    if v[1] ~= nil then
        for i = 1, #v do
            parts[i] = to_json(v[i])
        end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do
        parts[i] = to_json(tostring(k)) .. ":" .. to_json(v[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

-- A status file as a JSON-able table: "name value" lines, a name that
-- comes more than once (shard, follower) as an array of its values.
local function status_fields(st)
    local t, count = {}, {}
    for _, line in ipairs(st.lines) do
        local name = line:match("^(%S+)")
        count[name] = (count[name] or 0) + 1
    end
    for _, line in ipairs(st.lines) do
        local name, value = line:match("^(%S+)%s*(.-)%s*$")
        local v = tonumber(value) or value
        if count[name] > 1 or name == "shard" or name == "follower" then
            t[name] = t[name] or {}
            table.insert(t[name], value)
        else
            t[name] = v
        end
    end
    return t
end

-- One store's status: { role, running, last_gsn (nil if it did not
-- open: error), replica, replication (the status files, or nil) }.
local function store_status(dir, opts)
    local repl = require("armdb.replication")
    local r = { replica = repl.read_status(dir, "REPLICA"), replication = repl.read_status(dir, "REPLICATION") }
    local t = { role = "none", running = false }
    local newest = -1
    for _, st in ipairs({ r.replica or false, r.replication or false }) do
        if st then
            local at = tonumber(st.fields.updated_ms) or 0
            if at > newest then
                newest = at
                t.role = st.fields.role or (st == r.replica and "follower" or "leader")
            end
        end
    end
    if newest >= 0 then
        t.running = os.time() * 1000 - newest <= RUNNING_MS
    end
    local ok, s, msg = pcall(armdb.store, dir, { read_only = true, create = false, encryption_key = opts[KEY] })
    if ok and s then
        t.last_gsn = s:last_gsn()
        s:close()
    else
        t.error = ok and msg or clean_err(s)
    end
    t.replica = r.replica and status_fields(r.replica)
    t.replication = r.replication and status_fields(r.replication)
    return t, r
end

function cmds.status(opts, pos)
    two_arg(pos, 1, "status")
    local t = resolve(pos[1], opts)
    local all, one = {}, nil
    for _, c in ipairs(collection_dirs(t)) do
        local st, raw = store_status(c.dir, opts)
        one = st
        if t.kind == "database" then
            all[c.label] = st
        end
        if not opts.json then
            local prefix = t.kind == "database" and ("[" .. c.label .. "] ") or ""
            out:write(prefix, "role ", st.role, "\n")
            out:write(prefix, "running ", st.running and "yes" or "no", "\n")
            if st.last_gsn then
                out:write(prefix, string.format("last_gsn %d\n", st.last_gsn))
            else
                out:write(prefix, "last_gsn unknown (", st.error, ")\n")
            end
            for _, line in ipairs(raw.replica and raw.replica.lines or {}) do
                out:write(prefix, "replica ", line, "\n")
            end
            for _, line in ipairs(raw.replication and raw.replication.lines or {}) do
                out:write(prefix, "replication ", line, "\n")
            end
        end
    end
    if opts.json then
        out:write(to_json(t.kind == "database" and all or one), "\n")
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
    local names = sorted_keys(read_catalog(dbdir).collections)
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
        local fn = cmds[ALIASES[cmd] or cmd]
        if fn == nil then
            usage_error("unknown command %s (see armdb --help)", cmd)
        end
        local opts, pos = parse_args(ALIASES[cmd] or cmd, argv, 2)
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
