#!/usr/bin/env python3
"""brisk.1: `make man` output against `brisk --help` and groff's warnings.

    tests/deploy/test_man.py --build DIR

Prints "ok - NAME", "FAIL - NAME: why" or "skip - NAME: why" lines (tests/deploy/run.sh
counts them)."""
import argparse
import os
import re
import shutil
import subprocess
import sys

import common
from common import ROOT, report




def help_settings(binary):
    """(flag, env, default, help) rows of `brisk --help`."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    rows = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  --(\S+)\s+(BRISK_\S+)\s+(\S+)$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), lines[i + 1].strip()))
    return rows


def unroff(s):
    """roff escapes used by the generator back to text."""
    s = re.sub(r"\\f[BIRP]", "", s)
    return s.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def man_settings(page):
    """(flag, env, default, help) rows of the SETTINGS section."""
    sec = page.split("\n.SH SETTINGS\n", 1)[1].split("\n.SH ", 1)[0]
    rows = []
    for entry in sec.split("\n.TP\n")[1:]:
        lines = entry.split("\n")
        m = re.match(r"^\\fB\\-\\-(.+?)\\fR=\\fIvalue\\fR, \\fB(.+?)\\fR$", lines[0])
        if not m:
            rows.append(("?", "?", "?", lines[0]))
            continue
        help_text = unroff(lines[1])
        default = "-"
        if len(lines) > 3 and lines[2] == ".br" and lines[3].startswith("Default: "):
            default = unroff(lines[3][len("Default: "):])
        rows.append((unroff(m.group(1)), unroff(m.group(2)), default, help_text))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    build = args.build
    binary = os.path.join(build, "brisk")

    r = subprocess.run(["make", "-s", "BUILD=" + build, "man"], cwd=ROOT, capture_output=True,
                       text=True)
    page_path = os.path.join(ROOT, build, "brisk.1")
    report("make man writes %s/brisk.1" % build, r.returncode == 0 and os.path.isfile(page_path),
           r.stderr.strip()[-300:])
    if r.returncode != 0:
        return
    with open(page_path, encoding="utf-8") as f:
        page = f.read()
    direct = subprocess.run([os.path.join(ROOT, binary), "help-man"], capture_output=True,
                            text=True)
    report("brisk help-man prints the same page, exit 0",
           direct.returncode == 0 and direct.stdout == page, "differs from make man's output")

    # the page ends each text with a full stop
    want = [w[:3] + (w[3].rstrip("."),) for w in help_settings(os.path.join(ROOT, binary))]
    got = [g[:3] + (g[3].rstrip("."),) for g in man_settings(page)]
    report("--help lists settings", len(want) >= 20, "only %d parsed" % len(want))
    if got != want:
        missing = [w for w in want if w not in got]
        extra = [g for g in got if g not in want]
        report("man page SETTINGS == brisk --help (flag, variable, default, text, order)", False,
               "missing or different: %r; only in the man page: %r" % (missing[:3], extra[:3]))
    else:
        report("man page SETTINGS == brisk --help (%d settings, same order and text)" % len(want),
               True)

    sections = re.findall(r"^\.SH (.+)$", page, re.M)
    need = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "SETTINGS", "ENVIRONMENT", "SIGNALS",
            '"EXIT STATUS"', "FILES", '"SEE ALSO"']
    need = [n.strip('"') for n in need]
    sections = [s.strip('"') for s in sections]
    report("sections %s" % ", ".join(need), all(n in sections for n in need),
           "have %r" % sections)
    signals = page.split("\n.SH SIGNALS\n", 1)[-1].split("\n.SH ", 1)[0]
    report("SIGNALS names SIGTERM, SIGINT, SIGHUP, SIGPIPE",
           all(s in signals for s in ("SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE")), signals[:200])
    status = page.split("\n.SH EXIT STATUS\n", 1)[-1].split("\n.SH ", 1)[0]
    report("EXIT STATUS describes 0, 1, 2",
           all(".TP\n.B %d\n" % n in status for n in (0, 1, 2)), status[:200])

    # the exit statuses the page documents, as the binary gives them
    b = os.path.join(ROOT, binary)
    cases = [([b, "--version"], 0), ([b, "--help"], 0), ([b], 2), ([b, "bogus"], 2),
             ([b, "serve", "--no-such-flag=1"], 2), ([b, "serve", "--max-headers=0"], 2)]
    bad = []
    for argv, code in cases:
        rc = subprocess.run(argv, capture_output=True, timeout=10).returncode
        if rc != code:
            bad.append("%s -> %d, not %d" % (" ".join(argv[1:]) or "(none)", rc, code))
    report("documented exit statuses 0 and 2", not bad, "; ".join(bad))

    if shutil.which("groff"):
        g = subprocess.run(["groff", "-man", "-ww", "-z", page_path], capture_output=True,
                           text=True)
        report("groff -man -ww -z: no warnings", g.returncode == 0 and not g.stderr.strip(),
               g.stderr.strip()[:300])
    else:
        report("groff -man -ww -z: no warnings", False, "groff missing (apt-get install groff-base)")
    if shutil.which("man"):
        env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0")
        m = subprocess.run(["man", "--warnings", "-l", page_path], capture_output=True,
                           text=True, env=env)
        text = re.sub(".\b", "", m.stdout)  # overstrike bold and underline
        flags_shown = all("--%s=value" % w[0] in text for w in want)
        report("man -l renders without warnings, every --flag readable as ASCII",
               m.returncode == 0 and not m.stderr.strip() and flags_shown,
               (m.stderr.strip() or "a flag is not in the rendered text")[:300])
    else:
        print("skip - man -l: man (man-db) is not installed")


if __name__ == "__main__":
    main()
    sys.exit(1 if common.failures else 0)
