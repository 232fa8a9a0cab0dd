#!/usr/bin/env python3
"""Differential test of brisk's JSON reader against Python's json module.

Usage: gen_and_compare.py PATH_TO_json_check [--verbose]

Generates documents (random valid ones, random mutations and truncations of
them, and a hand-written list of malformed inputs), feeds them all to
json_check in one run (see json_check.c for the protocol) and compares, for
every document, accept/reject and the parsed value with a reference built on
json.loads, made RFC 8259 strict:

- the bytes must decode as strict UTF-8 (Python's codec rejects overlongs,
  encoded surrogates, code points above U+10FFFF and truncated sequences);
- NaN, Infinity and -Infinity are rejected (parse_constant);
- duplicate keys in one object are rejected (object_pairs_hook);
- a lone surrogate from a \\u escape (left in the str by Python) is rejected;
- nesting deeper than 64 arrays/objects is rejected.

Values are compared as parsed structures: brisk's compact re-serialization is
parsed with the same strict reference and must equal the reference parse of the
input (objects as ordered pairs, integers exactly, other numbers as floats).
brisk also reports, for each number in document order, its int64 value or "x";
that must match the reference (an integer within int64 range, or not).

Environment: JSON_DIFF_SEED (default 20260101), JSON_DIFF_CASES (number of
generated cases, default 5000). The last line printed is "N passed, N failed";
the exit status is nonzero when any case failed.
"""

import json
import os
import random
import subprocess
import sys

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# ---- the strict reference -------------------------------------------------


class Reject(Exception):
    pass


class Obj(tuple):
    """An object as an ordered tuple of (key, value) pairs."""


def _pairs_hook(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Reject("duplicate key")
    return Obj(pairs)


def _reject_constant(name):
    raise Reject("non-standard constant " + name)


def _check_tree(v):
    """Reject lone surrogates in strings and nesting deeper than MAX_DEPTH."""
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in x):
                raise Reject("lone surrogate")
        elif isinstance(x, Obj):
            if d + 1 > MAX_DEPTH:
                raise Reject("too deep")
            for k, val in x:
                stack.append((k, d + 1))
                stack.append((val, d + 1))
        elif isinstance(x, list):
            if d + 1 > MAX_DEPTH:
                raise Reject("too deep")
            for val in x:
                stack.append((val, d + 1))


def ref_parse(data):
    """(True, value) for a strictly valid document, (False, reason) otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False, "invalid utf-8"
    try:
        v = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
        _check_tree(v)
    except (ValueError, Reject, RecursionError) as e:
        return False, str(e)[:80]
    return True, v


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, Obj):
        return len(a) == len(b) and all(
            ka == kb and same(va, vb) for (ka, va), (kb, vb) in zip(a, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b  # str, bool, None, int (exact), float


def number_notes(v):
    """brisk's view of each number in document order: the int64, or 'x'."""
    out = []
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, Obj):
            stack.extend(val for _, val in reversed(x))
        elif isinstance(x, list):
            stack.extend(reversed(x))
        elif isinstance(x, bool) or x is None or isinstance(x, str):
            pass
        elif isinstance(x, int):
            out.append(str(x) if INT64_MIN <= x <= INT64_MAX else "x")
        else:
            out.append("x")
    return " ".join(out)


# ---- generators --------------------------------------------------------------

WS = " \t\n\r"
SHORT_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def rand_char(rng):
    r = rng.random()
    if r < 0.55:
        return chr(rng.randint(0x20, 0x7E))
    if r < 0.65:
        return rng.choice('"\\/\b\f\n\r\t\x00\x01\x1f\x7f')
    if r < 0.75:
        return chr(rng.randint(0x80, 0x7FF))
    if r < 0.88:
        c = rng.randint(0x800, 0xFFFF)
        return chr(c) if not 0xD800 <= c <= 0xDFFF else "\ue000"
    if r < 0.95:
        return chr(rng.randint(0x10000, 0x10FFFF))
    return rng.choice(["\u2028", "\u2029", "\ufeff", "\uffff", "\U0010ffff", "\U0001f600", "\u00e9"])


def rand_str(rng):
    n = rng.choice([0, 1, 2, 3, 5, 8, 13, rng.randint(0, 40)])
    return "".join(rand_char(rng) for _ in range(n))


def hex4(rng, c):
    h = "%04x" % c
    return h.upper() if rng.random() < 0.3 else h


def ser_str(rng, s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        must = ch in '"\\' or c < 0x20
        if must or rng.random() < 0.15:
            if ch in SHORT_ESC and rng.random() < 0.7:
                out.append(SHORT_ESC[ch])
            elif ch == "/" and rng.random() < 0.5:
                out.append("\\/")
            elif c >= 0x10000:
                c -= 0x10000
                out.append("\\u" + hex4(rng, 0xD800 + (c >> 10)) + "\\u" + hex4(rng, 0xDC00 + (c & 0x3FF)))
            else:
                out.append("\\u" + hex4(rng, c))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def rand_number(rng):
    r = rng.random()
    if r < 0.15:
        return str(rng.choice([0, 1, -1, 9, 10, 100, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1]))
    if r < 0.25:
        return str(rng.choice([INT64_MAX + 1, INT64_MIN - 1, 2**64 - 1, 2**64, -(2**64), 10**19, 10**19 - 1, -(10**19)]))
    if r < 0.35:
        return rng.choice(["-0", "0", "-0.0", "0e0", "0E-0", "1E+2", "1e-2", "-1.5e300", "1e400", "-1e-400"])
    if r < 0.6:
        return str(rng.randint(-(10**rng.randint(1, 25)), 10**rng.randint(1, 25)))
    s = "-" if rng.random() < 0.4 else ""
    s += rng.choice(["0", str(rng.randint(1, 10**rng.randint(1, 12)))])
    if rng.random() < 0.6:
        s += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8)))
    if rng.random() < 0.5:
        s += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 400))
    return s


def ws(rng):
    if rng.random() < 0.7:
        return ""
    return "".join(rng.choice(WS) for _ in range(rng.randint(1, 3)))


def gen_value(rng, depth, max_depth, dup_keys):
    r = rng.random()
    if depth < max_depth and r < 0.18:
        n = rng.choice([0, 1, 2, 3, rng.randint(0, 8)])
        items = [ws(rng) + gen_value(rng, depth + 1, max_depth, dup_keys) + ws(rng) for _ in range(n)]
        return "[" + (",".join(items) if items else ws(rng)) + "]"
    if depth < max_depth and r < 0.36:
        n = rng.choice([0, 1, 2, 3, rng.randint(0, 8), rng.randint(15, 20)])
        keys = [rand_str(rng) for _ in range(n)]
        keys = list(dict.fromkeys(keys))  # unique...
        if dup_keys and keys and rng.random() < 0.3:
            keys.insert(rng.randint(0, len(keys)), rng.choice(keys))  # ...unless asked
        members = [
            ws(rng) + ser_str(rng, k) + ws(rng) + ":" + ws(rng) + gen_value(rng, depth + 1, max_depth, dup_keys) + ws(rng)
            for k in keys
        ]
        return "{" + (",".join(members) if members else ws(rng)) + "}"
    if r < 0.55:
        return ser_str(rng, rand_str(rng))
    if r < 0.8:
        return rand_number(rng)
    return rng.choice(["true", "false", "null"])


def gen_doc(rng):
    r = rng.random()
    if r < 0.05:
        # nesting around the limit, containing a random value
        d = rng.choice([62, 63, 64, 65, 66, 100])
        kinds = [rng.random() < 0.5 for _ in range(d)]
        inner = gen_value(rng, MAX_DEPTH, MAX_DEPTH, False) if rng.random() < 0.7 else ""
        if inner == "" and kinds[-1]:
            kinds[-1] = False
        opens = "".join('{"k":' if k else "[" for k in kinds)
        closes = "".join("}" if k else "]" for k in reversed(kinds))
        return ws(rng) + opens + inner + closes + ws(rng)
    max_depth = rng.choice([1, 2, 3, 4, 6, 10])
    return ws(rng) + gen_value(rng, 0, max_depth, rng.random() < 0.2) + ws(rng)


INTERESTING = (
    b'{}[]:,"\\ -+.eE0123456789tfnulrsaINfy/\t\n\r\x00\x01\x1f\x7f'
    b"\x80\xbf\xc0\xc1\xc2\xdf\xe0\xed\xee\xef\xf0\xf4\xf5\xfe\xff"
)
INVALID_UTF8 = [
    b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff",
    b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xef\xbb\xbf",
]
ESCAPE_BITS = [
    b"\\u", b"\\ud83d", b"\\ude00", b"\\ud83d\\ude00", b"\\ud800\\u0041", b"\\x", b"\\U0041",
    b"\\u00", b"\\'", b"\\", b"\\/", b"\\uDBFF\\uDFFF", b"\\u0000",
]


def mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(9)
        p = rng.randint(0, len(b))
        if op == 0:
            del b[p:]
        elif op == 1 and b:
            del b[min(p, len(b) - 1)]
        elif op == 2:
            b[p:p] = bytes([rng.choice(INTERESTING)])
        elif op == 3 and b:
            b[min(p, len(b) - 1)] = rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randrange(256)
        elif op == 4 and b:
            q = rng.randint(p, min(len(b), p + 20))
            b[q:q] = b[p:q]
        elif op == 5:
            b[p:p] = rng.choice(INVALID_UTF8)
        elif op == 6:
            b[p:p] = rng.choice(ESCAPE_BITS)
        elif op == 7 and len(b) > 1:
            q = rng.randrange(len(b))
            p = min(p, len(b) - 1)
            b[p], b[q] = b[q], b[p]
        elif op == 8:
            b[p:p] = rng.choice([b",", b"]", b"}", b"[", b"{", b'"', b":", b" ", b"0", b"-"])
    return bytes(b)


HAND = [
    b"", b" ", b"\t\r\n", b"\x00", b"null\x00", b"\xef\xbb\xbfnull", b"\xef\xbb\xbf{}",
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"[NaN]", b'{"a":Infinity}', b"nan", b"inf",
    b"01", b"-01", b"00", b"+1", b".5", b"1.", b"1.e3", b"1e", b"1e+", b"-", b"--1", b"0x1",
    b"1_0", b"\xd9\xa3", b"[\xd9\xa3]", b"\xef\xbc\x91", b"1 2", b"[1 2]", b"[1,]", b"[,1]",
    b'{"a":1,}', b'{"a" 1}', b'{"a":}', b"{1:1}", b"{'a':1}", b"{a:1}", b'{"a":1', b"[",
    b"]", b"{", b"}", b"[]]", b"{}}", b"tru", b"truee", b"nul", b"True", b"// x\n1", b"/*x*/1",
    b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ud83d"', b'"\\ude00\\ud83d"', b'"\\ud83dx"',
    b'"\\ud83d\\ude00"', b'"\\uD83D\\uDE00"', b'"\\u0000"', b'"\\u00e9"', b'"\\/"',
    b'"\\x41"', b'"\\a"', b'"\\\'"', b'"\x01"', b'"\x1f"', b'"\t"', b'"\n"', b'"\x7f"',
    b'"\xed\xa0\x80"', b'"\xc0\x80"', b'"\xe0\x80\x80"', b'"\xf4\x90\x80\x80"', b'"\xf5"',
    b'"\xff"', b'"\x80"', b'"\xc3"', b'"\xe2\x82"', b'"\xf0\x9f\x98"', b'"\xf0\x9f\x98\x80"',
    b'"\xf4\x8f\xbf\xbf"', b'"\xee\x80\x80"', b'"\xef\xbf\xbf"', b"\xc3\xa9", b"[\xc2\xa0]",
    b'{"a":1,"a":2}', b'{"a":1,"\\u0061":2}', b'{"\\u00e9":1,"\xc3\xa9":2}', b'{"":1,"":2}',
    b'{"a":1,"A":2}', b'{"a":{"a":1},"b":{"a":1}}', b'[{"a":1},{"a":1}]',
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"1" + b"0" * 400, b"-0", b"-0.0",
    b"1e400", b"-1e-400", b"1E+2", b"[1e5,1.5,-0,0]", b"[" * 64 + b"]" * 64,
    b"[" * 65 + b"]" * 65, b"[" * 100000, b'{"a":' * 64 + b"1" + b"}" * 64,
    b'{"a":' * 65 + b"1" + b"}" * 65, b"\f1", b"1\f", b"\v1", b'"a"b', b"[]{}", b"1,",
    b'{"a":[1,{"b":null}],"c":"\\n"}', b' { "a" : [ 1 , 2 ] } ', b"\"\\u12\"", b'"\\uzzzz"',
    b'"abc', b'"\\', b'"\\u', b'"\\ud83d\\', b'"\\ud83d\\u', b'"\\ud83d\\ude0"',
]


# ---- driver ------------------------------------------------------------------


def main():
    if len(sys.argv) < 2:
        print("usage: gen_and_compare.py PATH_TO_json_check [--verbose]", file=sys.stderr)
        return 2
    checker = sys.argv[1]
    verbose = "--verbose" in sys.argv[2:]
    seed = int(os.environ.get("JSON_DIFF_SEED", "20260101"))
    ncases = int(os.environ.get("JSON_DIFF_CASES", "5000"))
    rng = random.Random(seed)

    docs = list(HAND)
    valid = []
    while len(docs) < ncases:
        if not valid or rng.random() < 0.4:
            d = gen_doc(rng).encode("utf-8")
            valid.append(d)
            docs.append(d)
        else:
            docs.append(mutate(rng, rng.choice(valid)))

    payload = b"".join(b"%d\n" % len(d) + d for d in docs)
    proc = subprocess.run([checker], input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        print("json_check exited with status %d" % proc.returncode)
        print("0 passed, %d failed" % len(docs))
        return 1
    lines = proc.stdout.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != len(docs):
        print("json_check printed %d lines for %d documents" % (len(lines), len(docs)))
        print("0 passed, %d failed" % len(docs))
        return 1

    passed = failed = accepted = 0
    for doc, line in zip(docs, lines):
        parts = line.split(b"\t")
        ok_ref, ref = ref_parse(doc)
        problem = None
        if parts[0] == b"BAD":
            problem = "brisk invariant: " + b"\t".join(parts[1:]).decode("utf-8", "replace")
        elif parts[0] == b"ERR":
            if ok_ref:
                problem = "brisk rejected a valid document: " + parts[1].decode("utf-8", "replace")
        elif parts[0] == b"OK" and len(parts) == 3:
            if not ok_ref:
                problem = "brisk accepted an invalid document (python: %s)" % ref
            else:
                ok_out, out = ref_parse(parts[1])
                if not ok_out:
                    problem = "brisk's re-serialization is not strict json: %s" % out
                elif not same(ref, out):
                    problem = "values differ: brisk %r" % (parts[1][:200],)
                elif parts[2].decode() != number_notes(ref):
                    problem = "numbers differ: brisk %r, expected %r" % (parts[2].decode()[:200], number_notes(ref)[:200])
                else:
                    accepted += 1
        else:
            problem = "malformed json_check line %r" % line[:200]
        if problem:
            failed += 1
            if failed <= 20 or verbose:
                print("FAIL input %r: %s" % (doc[:160], problem))
        else:
            passed += 1
    print("seed %d: %d documents, %d valid, %d invalid" % (seed, len(docs), accepted, passed - accepted))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
