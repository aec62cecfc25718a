#!/usr/bin/env python3
"""The test binaries `cargo test` would run, from its build's JSON messages on stdin
(`cargo test --no-run --message-format=json...`): one line per binary, tab-separated,
`<target> <package directory> <executable>`, in cargo's order (package, then the library's unit
tests, the binaries', the integration tests, each by name), except that the targets named by
`--last a,b,...` come at the end in that order. A name in --last that the build has no test
binary for is an error: a renamed suite must not silently move back to the front.
Used by e2e/run-tests.sh."""
import argparse
import json
import os
import sys

KIND_ORDER = {"lib": 0, "rlib": 0, "proc-macro": 0, "bin": 1, "test": 2, "example": 3, "bench": 4}

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--last", default="", help="comma-separated test target names to run last")
args = ap.parse_args()
last = [n for n in args.last.split(",") if n]

found = {}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
        continue
    exe = msg.get("executable")
    if not exe:
        continue
    target = msg["target"]
    kind = target["kind"][0]
    found[exe] = (os.path.dirname(msg["manifest_path"]), KIND_ORDER.get(kind, 9), target["name"], kind)

if not found:
    sys.exit("list-suites.py: no test binaries in the build's messages")
# (package directory, kind, target name): cargo's order.
rows = sorted(found.items(), key=lambda kv: kv[1][:3])
is_late = lambda v, name: v[3] == "test" and v[2] == name
for name in last:
    if not any(is_late(v, name) for _, v in rows):
        sys.exit(f"list-suites.py: --last names '{name}', but the build has no such test target")
out = [r for r in rows if not any(is_late(r[1], n) for n in last)]
for name in last:
    out.extend(r for r in rows if is_late(r[1], name))
for exe, (package_dir, _, target, kind) in out:
    label = target if kind == "test" else f"{target} ({kind} unit tests)"
    print(f"{label}\t{package_dir}\t{exe}")
