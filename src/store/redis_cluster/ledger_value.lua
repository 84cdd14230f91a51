-- Reading a ledger value's header, for the scripts that need it
-- (click.lua, upgrade.lua): put before each script's text when it is
-- loaded (`concat!` in mod.rs and upgrade.rs), as Redis scripts cannot
-- share functions.
-- The kind byte: 'c' click, 'i' delivered mail, 'f' a click folded past
-- the undo window.
local function kind(v) return string.sub(v, 10, 10) end
-- A value of the 18-byte layout (no time, written before the undo
-- window): its ledger encoding follows the header at once and starts
-- with the label byte and the tokenizer version the header holds
-- (window.rs `is_legacy`, the same rule).
local function legacy(v)
  local k = kind(v)
  if (k ~= 'c' and k ~= 'i') or #v < 20 then return false end
  local l, z1, z2, z3, t = string.byte(v, 1), string.byte(v, 6), string.byte(v, 7),
    string.byte(v, 8), string.byte(v, 9)
  return string.byte(v, 19) == l and z1 == 0 and z2 == 0 and z3 == 0 and t < 128
    and string.byte(v, 20) == t
end
