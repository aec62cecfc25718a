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
    package_dir = os.path.dirname(msg["manifest_path"])
    package = os.path.basename(package_dir)
    name = target["name"] if kind == "test" else f"{target['name']} ({kind} unit tests)"
    found[exe] = ((package_dir, KIND_ORDER.get(kind, 9), target["name"]), name, package_dir, kind, target["name"])

if not found:
    sys.exit("list-suites.py: no test binaries in the build's messages")
rows = sorted(found.items(), key=lambda kv: kv[1][0])
late = {}
for name in last:
    match = [(exe, v) for exe, v in rows if v[3] == "test" and v[4] == name]
    if not match:
        sys.exit(f"list-suites.py: --last names '{name}', but the build has no such test target")
    late[name] = match
late_exes = {exe for m in late.values() for exe, _ in m}
out = [(exe, v) for exe, v in rows if exe not in late_exes]
for name in last:
    out.extend(late[name])
for exe, (_, name, package_dir, _, _) in out:
    print(f"{name}\t{package_dir}\t{exe}")
