-- armdb.util: small helpers the modules share.
local M = {}

-- The keys of t, sorted.
function M.sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end

return M
