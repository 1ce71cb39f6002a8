"""Runs an Argo CD health-check Lua script on objects, as Argo CD does (the
object is the global `obj`, the script returns {status, message}).

usage: argocd_health.py LUA_FILE OBJECTS_JSON  -> prints a JSON list of results
"""
import json
import sys

from lupa import LuaRuntime

script_file, objects = sys.argv[1], json.loads(sys.argv[2])
with open(script_file) as f:
    script = f.read()
results = []
for obj in objects:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.eval("function(json) return json end")(
        lua.table_from(obj, recursive=True)
    )
    result = lua.execute(script)
    results.append({"status": result["status"], "message": result["message"]})
print(json.dumps(results))
