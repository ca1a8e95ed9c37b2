"""Writes a C file in the style of a Lua binding: a lua_State, the
lua_CFunction typedef, and N `static int f(lua_State *L)` functions, plus a
few functions of other types that are not programs."""
import sys

n = int(sys.argv[1])
print("typedef struct lua_State lua_State;")
print("typedef int (*lua_CFunction)(lua_State *L);")
print("extern int lua_gettop(lua_State *L);")
print("extern void lua_pushinteger(lua_State *L, long n);")
for i in range(n):
    print(f"static int l_func{i}(lua_State *L) {{")
    print(f"  lua_pushinteger(L, lua_gettop(L) + {i});")
    print("  return 1;")
    print("}")
print("static const char *name_of(int i) { return i ? \"x\" : \"y\"; }")
print("long helper(lua_State *L, int k) { return (long)L + k + (long)name_of(k); }")
