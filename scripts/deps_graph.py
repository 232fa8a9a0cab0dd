#!/usr/bin/env python3
"""The dependency graph of src/ and the check that it points down the layers.

    scripts/deps_graph.py [--check] [--build DIR]

Prints the include edges between the folders of src/ ("app -> db (6)") and,
from the object files in DIR (default build; `make all` first), the calls
between modules (one .c file each). With --check it exits 1 naming every
include edge the layer rule forbids and every pair of modules that call each
other (a cycle: neither can be read, tested or replaced without the other).

Layers, top to bottom (docs/design.md draws them):
    top  (src/main.c, src/config.c)   wiring: may include everything
    app  -> http db json net base
    http -> net base
    db   -> net base     (net/loop.h and net/resolver.h only: the loop it registers
                          sockets with, host names looked up off that loop)
    json -> base
    net  -> base
    base -> libc only
"""
import os
import re
import subprocess
import sys

ALLOWED = {
    "top": {"app", "http", "db", "json", "net", "base"},
    "app": {"http", "db", "json", "net", "base"},
    "http": {"net", "base"},
    "db": {"net", "base"},
    "json": {"base"},
    "net": {"base"},
    "base": set(),
}
# the only headers of a lower folder that some folders may use
ONLY = {("db", "net"): {"net/loop.h", "net/resolver.h"}}

INCLUDE = re.compile(r'^#include "([^"]+)"', re.M)


def folder(path):
    rel = os.path.relpath(path, "src")
    return rel.split("/")[0] if "/" in rel else "top"


def sources():
    for root, _, files in os.walk("src"):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                yield os.path.join(root, f)


def include_edges():
    edges, bad = {}, []
    for path in sources():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        src = folder(path)
        for inc in INCLUDE.findall(text):
            dst = inc.split("/")[0] if "/" in inc else "top"
            if dst == src:
                continue
            edges[(src, dst)] = edges.get((src, dst), 0) + 1
            only = ONLY.get((src, dst))
            if dst not in ALLOWED.get(src, set()) or (only and inc not in only):
                bad.append("%s includes %s (%s -> %s)" % (path, inc, src, dst))
    return edges, bad


def symbols(obj):
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBRC" and parts[1].isupper():
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            used.add(parts[1])
    return defined, used


def module_cycles(build):
    objs = {}
    for path in sources():
        if path.endswith(".c"):
            obj = os.path.join(build, path[:-2] + ".o")
            if not os.path.exists(obj):
                sys.exit("deps_graph: %s missing: run make all first (or --build DIR)" % obj)
            objs[path[:-2]] = symbols(obj)
    calls = {}
    for a, (_, used) in objs.items():
        for b, (defined, _) in objs.items():
            if a != b and used & defined:
                calls.setdefault(a, set()).add(b)
    cycles = []
    for a in sorted(calls):
        for b in sorted(calls[a]):
            if a < b and a in calls.get(b, set()):
                cycles.append("%s <-> %s" % (a[4:], b[4:]))
    return calls, cycles


def main():
    check = "--check" in sys.argv
    build = "build"
    if "--build" in sys.argv:
        build = sys.argv[sys.argv.index("--build") + 1]
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    edges, bad = include_edges()
    print("include edges between folders of src/:")
    for (a, b), n in sorted(edges.items()):
        print("  %-4s -> %-4s (%d)" % (a, b, n))
    _, cycles = module_cycles(build)
    if not check:
        return 0
    for b in bad:
        print("forbidden: " + b)
    for c in cycles:
        print("cycle: " + c)
    if bad or cycles:
        print("dependency graph: %d forbidden include edges, %d module cycles (docs/design.md)"
              % (len(bad), len(cycles)))
        return 1
    print("dependency graph: every arrow points down, no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
