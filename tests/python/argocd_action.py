"""Runs an Argo CD resource-action Lua script on an object, as Argo CD does
(the object is the global `obj`, the script returns the changed object).

usage: argocd_action.py LUA_FILE OBJECT_JSON  -> prints the object as JSON
"""
import json
import sys

from lupa import LuaRuntime

script_file, obj = sys.argv[1], json.loads(sys.argv[2])
with open(script_file) as f:
    script = f.read()
lua = LuaRuntime(unpack_returned_tuples=True)
lua.globals().obj = lua.table_from(obj, recursive=True)
result = lua.execute(script)


def plain(value):
    if hasattr(value, "items"):
        items = dict(value.items())
        if items and all(isinstance(k, int) for k in items):
            return [plain(items[k]) for k in sorted(items)]
        return {k: plain(v) for k, v in items.items()}
    return value


print(json.dumps(plain(result)))
