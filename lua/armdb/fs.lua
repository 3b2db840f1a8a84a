-- armdb.fs: the few file-system calls the database layer needs (mkdir,
-- an atomic file replace, a directory lock), straight to libc through the
-- FFI.
--
-- Each libc function is declared only if no other module has declared it
-- already, so this file can live beside ljsyscall or OpenResty code. Every
-- call returns true or nil, message, -errno; nothing here raises on an
-- operating error. The O_* values are Linux's generic ones (x86, arm,
-- arm64, riscv); the libraries this binding loads are Linux-only.
local ffi = require("ffi")

local C = ffi.C

local DECLS = {
    open = "int open(const char *path, int flags, ...);",
    close = "int close(int fd);",
    write = "long write(int fd, const void *buf, size_t n);",
    fsync = "int fsync(int fd);",
    rename = "int rename(const char *from, const char *to);",
    mkdir = "int mkdir(const char *path, unsigned int mode);",
    flock = "int flock(int fd, int op);",
    unlink = "int unlink(const char *path);",
    strerror = "char *strerror(int errnum);",
    read = "long read(int fd, void *buf, size_t n);",
    rmdir = "int rmdir(const char *path);",
    opendir = "void *opendir(const char *path);",
    closedir = "int closedir(void *d);",
}
-- readdir's entry as glibc lays it out on Linux (x86_64, arm64, riscv64):
-- only the name is read.
pcall(ffi.cdef, [[
struct armdb_fs_dirent { uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type;
    char d_name[256]; };
struct armdb_fs_dirent *readdir(void *d);
]])
for name, decl in pairs(DECLS) do
    if not pcall(function()
        return C[name]
    end) then
        ffi.cdef(decl)
    end
end

local O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_CLOEXEC = 0, 1, 64, 128, 512, 524288
local LOCK_EX, LOCK_UN = 2, 8
local EINTR, EEXIST = 4, 17

local M = { EEXIST = EEXIST, ENOENT = 2 }

local function fail(what)
    local e = ffi.errno()
    return nil, what .. ": " .. ffi.string(C.strerror(e)), -e
end

-- Create directory `path` (its parent must exist). true if it was
-- created, false if it was there already.
function M.mkdir(path)
    if C.mkdir(path, 493) == 0 then -- 0755, as the C library makes its directories
        return true
    end
    if ffi.errno() == EEXIST then
        return false
    end
    return fail("create directory " .. path)
end

-- true if `path` can be opened for reading (a file or a directory).
function M.exists(path)
    local fd = C.open(path, O_RDONLY + O_CLOEXEC)
    if fd < 0 then
        return fail("open " .. path)
    end
    C.close(fd)
    return true
end

function M.fsync_path(path)
    local fd = C.open(path, O_RDONLY + O_CLOEXEC)
    if fd < 0 then
        return fail("open " .. path)
    end
    local rc = C.fsync(fd)
    if rc ~= 0 then
        local _, msg, code = fail("fsync " .. path)
        C.close(fd)
        return nil, msg, code
    end
    C.close(fd)
    return true
end

local function write_all(fd, data, path)
    local off = 0
    while off < #data do -- `data` stays referenced while p points into it
        local p = ffi.cast("const char *", data)
        local w = tonumber(C.write(fd, p + off, #data - off))
        if w < 0 then
            if ffi.errno() ~= EINTR then
                return fail("write " .. path)
            end
        else
            off = off + w
        end
    end
    return true
end

-- Replace file dir/name with `data` so that a crash leaves either the old
-- or the new content: write dir/name.tmp, fsync it, rename it over
-- dir/name, fsync dir.
function M.replace(dir, name, data)
    local path = dir .. "/" .. name
    local tmp = path .. ".tmp"
    local fd = C.open(tmp, O_WRONLY + O_CREAT + O_TRUNC + O_CLOEXEC, ffi.cast("int", 420)) -- 0644
    if fd < 0 then
        return fail("create " .. tmp)
    end
    local ok, msg, code = write_all(fd, data, tmp)
    if ok and C.fsync(fd) ~= 0 then
        ok, msg, code = fail("fsync " .. tmp)
    end
    C.close(fd)
    if not ok then
        return nil, msg, code
    end
    if C.rename(tmp, path) ~= 0 then
        return fail("rename " .. tmp .. " to " .. path)
    end
    return M.fsync_path(dir)
end

-- Remove dir/name and make that durable (fsync of dir). true, false if
-- it was not there, or nil, message, -errno.
function M.remove(dir, name)
    local path = dir .. "/" .. name
    if C.unlink(path) ~= 0 then
        if ffi.errno() == M.ENOENT then
            return false
        end
        return fail("remove " .. path)
    end
    return M.fsync_path(dir)
end

-- The names in directory `dir` (without . and ..), sorted; or nil,
-- message, -errno.
function M.list(dir)
    local d = C.opendir(dir)
    if d == nil then
        return fail("list " .. dir)
    end
    local names = {}
    while true do
        local e = C.readdir(d)
        if e == nil then
            break
        end
        local name = ffi.string(e.d_name)
        if name ~= "." and name ~= ".." then
            names[#names + 1] = name
        end
    end
    C.closedir(d)
    table.sort(names)
    return names
end

-- Is path a directory? (opendir succeeds)
function M.is_dir(path)
    local d = C.opendir(path)
    if d == nil then
        return false
    end
    C.closedir(d)
    return true
end

local copy_buf_size = 1048576
local copy_buf

-- Copy file `from` to the new file `to` (which must not exist), fsynced.
-- on_bytes(n), if given, is called after each chunk. true, or nil,
-- message, -errno.
function M.copy_file(from, to, on_bytes)
    copy_buf = copy_buf or ffi.new("char[?]", copy_buf_size)
    local src = C.open(from, O_RDONLY + O_CLOEXEC)
    if src < 0 then
        return fail("open " .. from)
    end
    local dst = C.open(to, O_WRONLY + O_CREAT + O_EXCL + O_CLOEXEC, ffi.cast("int", 420))
    if dst < 0 then
        local _, msg, code = fail("create " .. to)
        C.close(src)
        return nil, msg, code
    end
    local ok, msg, code = true, nil, nil
    while ok do
        local n = tonumber(C.read(src, copy_buf, copy_buf_size))
        if n < 0 then
            if ffi.errno() ~= EINTR then
                ok, msg, code = fail("read " .. from)
            end
        elseif n == 0 then
            break
        else
            ok, msg, code = write_all(dst, ffi.string(copy_buf, n), to)
            if ok and on_bytes then
                on_bytes(n)
            end
        end
    end
    if ok and C.fsync(dst) ~= 0 then
        ok, msg, code = fail("fsync " .. to)
    end
    C.close(src)
    C.close(dst)
    if not ok then
        return nil, msg, code
    end
    return true
end

-- Remove path and everything under it (a file or a directory tree).
-- true, or nil, message, -errno.
function M.remove_tree(path)
    if M.is_dir(path) then
        local names, msg, code = M.list(path)
        if not names then
            return nil, msg, code
        end
        for _, name in ipairs(names) do
            local ok, m, c = M.remove_tree(path .. "/" .. name)
            if not ok then
                return nil, m, c
            end
        end
        if C.rmdir(path) ~= 0 then
            return fail("remove " .. path)
        end
        return true
    end
    if C.unlink(path) ~= 0 and ffi.errno() ~= M.ENOENT then
        return fail("remove " .. path)
    end
    return true
end

-- The directory part of path ("." if it has none).
function M.dirname(path)
    path = path:gsub("/+$", "")
    local d = path:match("^(.*)/[^/]*$")
    if d == nil then
        return "."
    end
    return d == "" and "/" or d
end

-- Rename from to to (same file system), then fsync the parent of to.
function M.rename(from, to, parent)
    if C.rename(from, to) ~= 0 then
        return fail("rename " .. from .. " to " .. to)
    end
    return M.fsync_path(parent)
end

-- Run fn() holding an exclusive flock on directory `dir` (the lock of
-- the catalog: short, blocking, released on return or error). Returns
-- what fn returns, or nil, message, -errno if the lock cannot be taken.
function M.with_lock(dir, fn)
    local fd = C.open(dir, O_RDONLY + O_CLOEXEC)
    if fd < 0 then
        return fail("open " .. dir)
    end
    while C.flock(fd, LOCK_EX) ~= 0 do
        if ffi.errno() ~= EINTR then
            local _, msg, code = fail("lock " .. dir)
            C.close(fd)
            return nil, msg, code
        end
    end
    local res = { pcall(fn) }
    C.flock(fd, LOCK_UN)
    C.close(fd)
    if not res[1] then
        error(res[2], 0)
    end
    return unpack(res, 2, table.maxn(res))
end

return M
