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
}
for name, decl in pairs(DECLS) do
    if not pcall(function()
        return C[name]
    end) then
        ffi.cdef(decl)
    end
end

local O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_CLOEXEC = 0, 1, 64, 512, 524288
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
