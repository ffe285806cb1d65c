-- Canonical JSON for the strings the scripts write (the C side is
-- mx_json.c): the escapes Matrix's canonical JSON uses, \uXXXX for the
-- other control characters, everything else as it is (UTF-8 unchanged).
local function json_string(s)
  return '"' .. s:gsub('[%z\1-\31"\\]', function(c)
    local b = c:byte()
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    if b == 8 then return '\\b' end
    if b == 9 then return '\\t' end
    if b == 10 then return '\\n' end
    if b == 12 then return '\\f' end
    if b == 13 then return '\\r' end
    return string.format('\\u%04x', b)
  end) .. '"'
end
