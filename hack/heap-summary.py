#!/usr/bin/env python3
"""Summarises a dhat heap profile (dhat-heap.json, written by a build with
`--features heap-profile` on SIGUSR1, or when it ends on SIGTERM): the bytes
live when it was written, by the innermost frame of our own code, by the
innermost frame of a library that holds them, and by the first frames of our
own code and kube's (which cache holds them). Usage:
heap-summary.py dhat-heap.json [N]
"""

import collections
import json
import re
import sys

FIELD = "eb"  # bytes live when the profile was written ("gb": at the peak)

SKIP = re.compile(
    r"backtrace::|dhat::|alloc::|core::|std::|hashbrown::|__rust|<alloc|<core|<std|"
    r"serde::|serde_json::de|<serde|<&mut serde_json|<hashbrown|<T as alloc"
)


def name(frame: str) -> str:
    # "0x1234: path::to::func (src/file.rs:12:5)" -> "path::to::func (file.rs:12)"
    text = frame.split(": ", 1)[-1]
    text = re.sub(r"\{\{closure\}\}", "{closure}", text)
    match = re.match(r"(.*?) \((?:.*/)?([^/]+?):(\d+)(?::\d+)?\)$", text)
    if match:
        return f"{match.group(1)} ({match.group(2)}:{match.group(3)})"
    return text


def main() -> None:
    profile = json.load(open(sys.argv[1]))
    most = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    frames = profile["ftbl"]
    ours = collections.Counter()
    holders = collections.Counter()
    blocks = collections.Counter()
    holders_by_cache = collections.Counter()
    total = 0
    for point in profile["pps"]:
        live = point.get(FIELD, 0)
        if not live:
            continue
        total += live
        stack = [frames[i] for i in point["fs"]]
        own = next((name(f) for f in stack if "tokensmith::" in f), "(no frame of ours)")
        holder = next((name(f) for f in stack if not SKIP.search(f.split(": ", 1)[-1])), "?")
        ours[own] += live
        holders[holder] += live
        blocks[own] += point.get(FIELD + "k", 0)
        path = [name(f) for f in stack if re.search(r"tokensmith::|kube_runtime::", f)]
        holders_by_cache[" <- ".join(path[:3]) or "?"] += live
    print(f"live: {total / 1048576:.1f} MiB")
    print(f"\nby the innermost frame of tokensmith (MiB, blocks):")
    for frame, live in ours.most_common(most):
        print(f"{live / 1048576:8.2f} {blocks[frame]:9d}  {frame}")
    print(f"\nby the innermost frame outside std/alloc/serde (MiB):")
    for frame, live in holders.most_common(most):
        print(f"{live / 1048576:8.2f}  {frame}")
    print(f"\nby the first frames of tokensmith and kube-runtime (MiB):")
    for path, live in holders_by_cache.most_common(most):
        print(f"{live / 1048576:8.2f}  {path[:300]}")


if __name__ == "__main__":
    main()
