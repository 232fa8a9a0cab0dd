#!/usr/bin/env python3
"""`make install DESTDIR=...`: the binary, the man page, the systemd unit and the
example environment file land where the README says, for PREFIX=/usr/local (the
default) and PREFIX=/usr; an edited environment file is never overwritten.

    tests/deploy/test_install.py --build DIR"""
import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import common
from common import ROOT, report




def make_install(build, destdir, *extra):
    return subprocess.run(["make", "-s", "BUILD=" + build, "DESTDIR=" + destdir, *extra,
                           "install"], cwd=ROOT, capture_output=True, text=True)


def check_tree(build, dest, prefix):
    bindir = dest + prefix + "/bin"
    exe = bindir + "/brisk"
    man = dest + prefix + "/share/man/man1/brisk.1"
    unit = dest + prefix + "/lib/systemd/system/brisk.service"
    env = dest + "/etc/brisk/brisk.env"
    problems = []
    for path, mode in ((exe, 0o755), (man, 0o644), (unit, 0o644), (env, 0o600)):
        if not os.path.isfile(path):
            problems.append("%s missing" % path[len(dest):])
        elif stat.S_IMODE(os.stat(path).st_mode) != mode:
            problems.append("%s mode %o, not %o" % (path[len(dest):],
                                                    stat.S_IMODE(os.stat(path).st_mode), mode))
    if problems:
        return problems
    v = subprocess.run([exe, "--version"], capture_output=True, text=True)
    if v.returncode != 0 or not v.stdout.startswith("brisk "):
        problems.append("installed binary: --version gave %r" % v.stdout)
    with open(man, encoding="utf-8") as f, open(os.path.join(ROOT, build, "brisk.1"),
                                                 encoding="utf-8") as g:
        if f.read() != g.read():
            problems.append("installed man page differs from %s/brisk.1" % build)
    with open(unit, encoding="utf-8") as f:
        text = f.read()
    if "\nExecStart=%s/bin/brisk serve\n" % prefix not in text:
        problems.append("unit's ExecStart does not name %s/bin/brisk" % prefix)
    with open(os.path.join(ROOT, "packaging", "brisk.service"), encoding="utf-8") as f:
        src = f.read().replace("/usr/local/bin/brisk", prefix + "/bin/brisk")
    if src != text:
        problems.append("installed unit differs from packaging/brisk.service beyond the path")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    build = ap.parse_args().build
    tmp = tempfile.mkdtemp(prefix="brisk-install-")
    try:
        dest = os.path.join(tmp, "local")
        r = make_install(build, dest)
        report("make install DESTDIR=... (PREFIX=/usr/local)", r.returncode == 0,
               r.stderr.strip()[-300:])
        if r.returncode == 0:
            p = check_tree(build, dest, "/usr/local")
            report("bin/brisk, share/man/man1/brisk.1, lib/systemd/system/brisk.service, "
                   "/etc/brisk/brisk.env under /usr/local", not p, "; ".join(p))
            env = dest + "/etc/brisk/brisk.env"
            with open(env, "a", encoding="utf-8") as f:
                f.write("BRISK_API_TOKEN=edited\n")
            r = make_install(build, dest)
            with open(env, encoding="utf-8") as f:
                kept = f.read().endswith("BRISK_API_TOKEN=edited\n")
            report("a second make install keeps the edited brisk.env", r.returncode == 0 and kept,
                   r.stderr.strip()[-300:] or "brisk.env was overwritten")
        dest = os.path.join(tmp, "usr")
        r = make_install(build, dest, "PREFIX=/usr")
        p = check_tree(build, dest, "/usr") if r.returncode == 0 else [r.stderr.strip()[-300:]]
        report("make install PREFIX=/usr: unit in /usr/lib/systemd/system, ExecStart=/usr/bin/brisk",
               not p, "; ".join(p))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if common.failures else 0)
