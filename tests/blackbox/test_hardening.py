"""The binary is built hardened (Makefile HARDEN / LDFLAGS_H): a PIE, full
RELRO (GNU_RELRO + BIND_NOW), stack protector, FORTIFY_SOURCE, no executable
stack or writable+executable segment, no text relocations. Checked with
readelf on the binary under test. Sanitizer builds (make SAN=1) are checked
for PIE, GNU_RELRO, the stack protector and the stack only: the Makefile
builds them without FORTIFY (ASan checks those functions itself) and links
them without -z now."""

import re
import shutil
import subprocess

from harness import check, fail, test


def readelf(binary, *args):
    exe = shutil.which("readelf")
    if not exe:
        fail("readelf not found (binutils)")
    p = subprocess.run([exe, "-W"] + list(args) + [binary], capture_output=True, timeout=60)
    if p.returncode != 0:
        fail("readelf %s: %s" % (" ".join(args), p.stderr.decode("utf-8", "replace")[-300:]))
    return p.stdout.decode("utf-8", "replace")


def imported_symbols(binary):
    out = set()
    for ln in readelf(binary, "--dyn-syms").splitlines():
        parts = ln.split()
        if len(parts) >= 8 and parts[6] == "UND":
            out.add(parts[7].split("@")[0])
    return out


def is_sanitizer_build(syms):
    return any(s.startswith("__asan_") or s.startswith("__ubsan_") for s in syms)


@test(server=None)
def hardening_pie(ctx):
    head = readelf(ctx.binary, "-h")
    m = re.search(r"^\s*Type:\s+(\S+)", head, re.M)
    check(m and m.group(1) == "DYN", "ELF type %r is not DYN (not a PIE)" % (m.group(1) if m else None))
    dyn = readelf(ctx.binary, "-d")
    check(re.search(r"\(FLAGS_1\).*\bPIE\b", dyn), "FLAGS_1 lacks PIE")
    check("TEXTREL" not in dyn, "text relocations present")


@test(server=None)
def hardening_full_relro(ctx):
    phdrs = readelf(ctx.binary, "-l")
    check(re.search(r"^\s*GNU_RELRO\s", phdrs, re.M), "no GNU_RELRO segment (-z relro)")
    dyn = readelf(ctx.binary, "-d")
    check(re.search(r"\(BIND_NOW\)", dyn) or re.search(r"\(FLAGS\).*\bBIND_NOW\b", dyn)
          or re.search(r"\(FLAGS_1\).*\bNOW\b", dyn),
          "no BIND_NOW / FLAGS_1 NOW: RELRO is partial, the GOT stays writable (-z now)")


@test(server=None)
def hardening_no_executable_stack_or_wx_segment(ctx):
    phdrs = readelf(ctx.binary, "-l")
    stack = [ln for ln in phdrs.splitlines() if ln.strip().startswith("GNU_STACK")]
    check(stack, "no GNU_STACK program header (the stack would default to executable)")
    check(stack and "E" not in stack[0].split()[-2], "executable stack: %r" % stack[0])
    for ln in phdrs.splitlines():
        parts = ln.split()
        if parts and parts[0] == "LOAD":
            flags = "".join(p for p in parts[6:-1])
            check(not ("W" in flags and "E" in flags), "writable and executable LOAD segment: %r" % ln)


@test(server=None)
def hardening_stack_protector_and_fortify(ctx):
    syms = imported_symbols(ctx.binary)
    check("__stack_chk_fail" in syms, "__stack_chk_fail not imported (-fstack-protector-strong missing)")
    chk = sorted(s for s in syms if re.match(r"^__\w+_chk$", s) and s != "__stack_chk_fail")
    if is_sanitizer_build(syms):
        return  # -U_FORTIFY_SOURCE in sanitizer builds (Makefile)
    check(len(chk) >= 3, "only %r imported: FORTIFY_SOURCE is not in effect" % chk)
    for want in ("__snprintf_chk", "__memcpy_chk"):
        check(want in syms, "%s not imported (FORTIFY_SOURCE)" % want)
