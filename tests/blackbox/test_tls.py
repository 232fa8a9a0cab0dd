"""TLS (README "TLS", docs/http.md "TLS"): BRISK_TLS_CERT/KEY/ADDR, TLS 1.2 and 1.3 only,
ALPN h2 and http/1.1, the handshake under the header timeout, bad handshakes, bad files at start
(exit 2), SIGHUP reload (new pair served, a broken pair keeps the old one), session
resumption, cleartext and TLS ports at once; every server runs with the sandbox on (the
default). Clients: python's ssl module, `openssl s_client` and `curl -k`."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

from harness import check, eq, fail, free_port, test, uniq, wait_for

_CERTS = {}
_CERTS_LOCK = threading.Lock()


def certs(ctx):
    """{"ec": (cert, key), "rsa": (cert, key), "rsa2": ...}: self-signed pairs made once
    with openssl req (the same command as make tls-dev-cert)."""
    with _CERTS_LOCK:
        if _CERTS:
            return _CERTS
        d = os.path.join(ctx.workdir, "tls-certs")
        os.makedirs(d, exist_ok=True)
        kinds = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
                 "rsa": ["-newkey", "rsa:2048"], "rsa2": ["-newkey", "rsa:2048"]}
        for name, args in kinds.items():
            cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
            subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj",
                            "/CN=brisk-test-" + name, "-keyout", key, "-out", cert] + args,
                           check=True, capture_output=True, timeout=60)
            _CERTS[name] = (cert, key)
        return _CERTS


def fingerprint_file(cert):
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    return hashlib.sha256(der).hexdigest()


def tls_server(ctx, name, env=None, kind="ec", copy=False):
    """A server with cleartext on srv.port and TLS on srv.tls_port (BRISK_TLS_ADDR).
    copy: serve copies of the pair (in a directory of its own) that the test may replace."""
    cert, key = certs(ctx)[kind]
    if copy:
        d = ctx.tmpdir()
        shutil.copy(cert, os.path.join(d, "cert.pem"))
        shutil.copy(key, os.path.join(d, "key.pem"))
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    tport = free_port()
    e = {"BRISK_THREADS": "2", "BRISK_TLS_CERT": cert, "BRISK_TLS_KEY": key,
         "BRISK_TLS_ADDR": "127.0.0.1:%d" % tport, "BRISK_LOG_LEVEL": "debug"}
    e.update(env or {})
    srv = ctx.new_server(env=e, name=name).start()
    srv.tls_port = tport
    srv.cert, srv.key = cert, key
    return srv


def stop_clean(srv, what):
    why = srv.stop()
    if why:
        fail("%s: %s" % (what, why))


def client_ctx(minv=None, maxv=None, alpn=("http/1.1",), ciphers=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if minv:
        c.minimum_version = minv
    if maxv:
        c.maximum_version = maxv
    if alpn:
        c.set_alpn_protocols(list(alpn))
    if ciphers:
        c.set_ciphers(ciphers)
    return c


def tls_connect(port, cctx=None, session=None, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return (cctx or client_ctx()).wrap_socket(raw, session=session)
    except BaseException:
        raw.close()
        raise


def send_request(s, method, path, body=None, close=True):
    data = b"" if body is None else json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    if close:
        head += "Connection: close\r\n"
    s.sendall(head.encode() + b"\r\n" + data)


def read_response(s):
    r = http.client.HTTPResponse(s)
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def read_keepalive(f):
    """One response with a Content-Length from the buffered reader f (the connection stays
    usable, unlike http.client's, which closes its reader after the body)."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed")
    status = int(line.split()[1])
    hdrs = {}
    while True:
        ln = f.readline().rstrip(b"\r\n")
        if not ln:
            break
        k, _, v = ln.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, f.read(int(hdrs.get("content-length", "0")))


def tls_request(port, method, path, body=None, cctx=None, session=None):
    """One request on a new TLS connection: (status, headers, body, info about the session)."""
    s = tls_connect(port, cctx, session)
    with s:
        send_request(s, method, path, body)
        st, hdrs, b = read_response(s)
        info = {"version": s.version(), "alpn": s.selected_alpn_protocol(),
                "reused": s.session_reused, "session": s.session, "cipher": s.cipher()[0],
                "fp": hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()}
    return st, hdrs, b, info


def served_fingerprint(port):
    s = tls_connect(port)
    with s:
        return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def s_client(port, *args, stdin=b"", timeout=20):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def closed_within(sock, upper):
    """Seconds until the peer closed sock (EOF or reset), or fail after upper."""
    t0 = time.time()
    sock.settimeout(upper)
    try:
        while True:
            b = sock.recv(4096)
            if not b:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        fail("connection still open after %.1f s" % upper)
    return time.time() - t0


# ---------------------------------------------------------------- requests


@test(server=None)
def health_and_users_over_tls_and_cleartext(ctx):
    srv = tls_server(ctx, "tls-basic")
    try:
        st, hdrs, body, info = tls_request(srv.tls_port, "GET", "/health")
        eq((st, body), (200, b"ok"), "GET /health over TLS")
        eq(hdrs.get("server"), "brisk", "Server header")
        email = "%s@example.com" % uniq("tls")
        st, hdrs, body, _ = tls_request(srv.tls_port, "POST", "/users",
                                        {"name": "Tee Ellis", "email": email})
        eq(st, 201, "POST /users over TLS (%r)" % body[:200])
        uid = json.loads(body)["id"]
        eq(hdrs.get("location"), "/users/%d" % uid, "Location")
        st, _, body, _ = tls_request(srv.tls_port, "GET", "/users/%d" % uid)
        eq((st, json.loads(body)["email"]), (200, email), "GET /users/{id} over TLS")
        # the cleartext port serves the same process at the same time
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with s:
            send_request(s, "GET", "/users/%d" % uid)
            st, _, body = read_response(s)
        eq((st, json.loads(body)["email"]), (200, email), "the same user over cleartext")
        # cleartext HTTP on the TLS port is a failed handshake, not a request
        s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
        with s:
            send_request(s, "GET", "/health")
            closed_within(s, 5)
        p = subprocess.run(["curl", "-sk", "--max-time", "10",
                            "https://127.0.0.1:%d/users/%d" % (srv.tls_port, uid)],
                           capture_output=True, timeout=20)
        eq(p.returncode, 0, "curl -k exit status (%r)" % p.stderr[-300:])
        eq(json.loads(p.stdout)["id"], uid, "curl -k GET /users/{id}")
        log = srv.stderr()
        check("127.0.0.1:%d (TLS)" % srv.tls_port in log, "start line does not name the TLS "
              "listener: %s" % log[-800:])
        check("TLS records: " in log, "no line saying which record path (kTLS/userspace) runs")
    finally:
        stop_clean(srv, "tls-basic")


@test(server=None)
def keep_alive_pipelining_and_big_bodies(ctx):
    """Many requests in one TLS write, and bodies of many records both ways (the read loop
    and partial writes)."""
    srv = tls_server(ctx, "tls-big")
    try:
        s = tls_connect(srv.tls_port)
        with s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
            f = s.makefile("rb")
            for i in range(40):
                st, _, b = read_keepalive(f)
                eq((st, b), (200, b"ok"), "pipelined response %d" % i)
            # a keep-alive request after the pipeline on the same session
            send_request(s, "GET", "/openapi.json", close=False)
            st, _, spec = read_keepalive(f)
            eq(st, 200, "GET /openapi.json")
            check(len(spec) > 16384, "openapi.json should span several TLS records")
            json.loads(spec)
        # a request body of about 1 MB (many records in) and its response (many out)
        orders = [{"id": "o-%d" % i, "user_id": 1 + i % 1000,
                   "items": [{"sku": "S-%d" % (i % 97), "quantity": 1 + i % 7,
                              "unit_price_cents": 100 + i % 5000}]} for i in range(10000)]
        st, _, body, _ = tls_request(srv.tls_port, "POST", "/orders/process", {"orders": orders})
        eq(st, 200, "POST /orders/process over TLS (%r)" % body[:200])
        eq(len(json.loads(body)["results"]), len(orders), "results for every order")
        # slow reader: the response must still arrive whole
        s = tls_connect(srv.tls_port)
        with s:
            send_request(s, "GET", "/openapi.json")
            got = b""
            while True:
                time.sleep(0.002)
                b = s.recv(1024)
                if not b:
                    break
                got += b
        check(got.endswith(spec) or spec in got, "slowly read /openapi.json is not whole")
    finally:
        stop_clean(srv, "tls-big")


# ---------------------------------------------------------------- protocol


@test(server=None)
def versions_ciphers_and_alpn(ctx):
    srv = tls_server(ctx, "tls-proto")
    try:
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health",
                                     cctx=client_ctx(minv=ssl.TLSVersion.TLSv1_3))
        eq((st, info["version"]), (200, "TLSv1.3"), "TLS 1.3")
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health",
                                     cctx=client_ctx(maxv=ssl.TLSVersion.TLSv1_2))
        eq((st, info["version"]), (200, "TLSv1.2"), "TLS 1.2")
        check(info["cipher"].startswith("ECDHE-") and ("GCM" in info["cipher"] or
                                                        "CHACHA20" in info["cipher"]),
              "TLS 1.2 cipher %s is not a forward-secret AEAD" % info["cipher"])
        # the server's order wins (AES-128-GCM before AES-256-GCM), except for a client
        # that puts ChaCha20 first
        for offer, want in (("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
                             "ECDHE-ECDSA-AES128-GCM-SHA256"),
                            ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
                             "ECDHE-ECDSA-CHACHA20-POLY1305")):
            st, _, _, info = tls_request(srv.tls_port, "GET", "/health",
                                         cctx=client_ctx(maxv=ssl.TLSVersion.TLSv1_2, ciphers=offer))
            eq((st, info["cipher"]), (200, want), "TLS 1.2 cipher chosen from %s" % offer)
        # TLS 1.2 with only CBC/SHA-1 suites offered: none is on the intermediate list
        try:
            tls_request(srv.tls_port, "GET", "/health",
                        cctx=client_ctx(maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA"))
            fail("a TLS 1.2 handshake with only ECDHE-ECDSA-AES128-SHA succeeded")
        except (ssl.SSLError, ConnectionResetError):
            pass
        # TLS 1.0 and 1.1: a client that really offers them (security level 0) is refused
        for flag, name in (("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")):
            rc, out = s_client(srv.tls_port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
            check(rc != 0 and "Cipher is (NONE)" in out or "alert protocol version" in out,
                  "%s was not refused: rc %d %s" % (name, rc, out[-600:]))
        check(wait_for(lambda: srv.stderr().count("failed: unsupported protocol") >= 2, 5),
              "the server did not log refusing TLS 1.0/1.1 (debug): %s" % srv.stderr()[-1000:])
        # ALPN: h2 chosen over http/1.1 (tests/blackbox/test_h2.py speaks it); no ALPN is
        # HTTP/1.1; a client offering none of ours is refused
        rc, out = s_client(srv.tls_port, "-alpn", "h2,http/1.1", stdin=b"")
        check("ALPN protocol: h2" in out, "s_client -alpn h2,http/1.1: %s" % out[-600:])
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health", cctx=client_ctx(alpn=None))
        eq((st, info["alpn"]), (200, None), "no ALPN")
        try:
            tls_request(srv.tls_port, "GET", "/health", cctx=client_ctx(alpn=("spdy/3",)))
            fail("ALPN spdy/3 alone was accepted")
        except (ssl.SSLError, ConnectionResetError):
            pass
        rc, out = s_client(srv.tls_port, "-alpn", "http/1.1", stdin=b"")
        check("ALPN protocol: http/1.1" in out, "s_client -alpn http/1.1: %s" % out[-600:])
        st, _, _, _ = tls_request(srv.tls_port, "GET", "/health")
        eq(st, 200, "still serving")
    finally:
        stop_clean(srv, "tls-proto")


@test(server=None)
def rsa_key(ctx):
    srv = tls_server(ctx, "tls-rsa", kind="rsa")
    try:
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health",
                                     cctx=client_ctx(maxv=ssl.TLSVersion.TLSv1_2))
        eq(st, 200, "RSA over TLS 1.2")
        check(info["cipher"].startswith("ECDHE-RSA-"), "cipher %s" % info["cipher"])
        eq(info["fp"], fingerprint_file(srv.cert), "served certificate")
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health")
        eq((st, info["version"]), (200, "TLSv1.3"), "RSA over TLS 1.3")
    finally:
        stop_clean(srv, "tls-rsa")


@test(server=None)
def session_resumption(ctx):
    srv = tls_server(ctx, "tls-resume")
    try:
        for maxv, name in ((None, "TLS 1.3"), (ssl.TLSVersion.TLSv1_2, "TLS 1.2")):
            cc = client_ctx(maxv=maxv)
            _, _, _, first = tls_request(srv.tls_port, "GET", "/health", cctx=cc)
            check(not first["reused"] and first["session"] is not None,
                  "%s: no session to resume" % name)
            st, _, _, again = tls_request(srv.tls_port, "GET", "/health", cctx=cc,
                                          session=first["session"])
            eq(st, 200, "%s resumed request" % name)
            check(again["reused"], "%s: session not resumed" % name)
        sess = os.path.join(ctx.tmpdir(), "sess.pem")
        rc, out = s_client(srv.tls_port, "-ign_eof", "-sess_out", sess, stdin=b"GET /health HTTP/1.1\r\n"
                           b"Host: x\r\nConnection: close\r\n\r\n")
        check(os.path.exists(sess), "s_client wrote no session: %s" % out[-500:])
        rc, out = s_client(srv.tls_port, "-ign_eof", "-sess_in", sess, stdin=b"GET /health HTTP/1.1\r\n"
                           b"Host: x\r\nConnection: close\r\n\r\n")
        check("Reused, TLSv1.3" in out, "s_client -sess_in: %s" % out[-800:])
    finally:
        stop_clean(srv, "tls-resume")


# ---------------------------------------------------------------- hostile clients


@test(server=None)
def silent_and_slow_handshakes_hit_the_header_timeout(ctx):
    srv = tls_server(ctx, "tls-slow", env={"BRISK_HEADER_TIMEOUT_MS": "800"})
    try:
        # opens TCP and says nothing: closed like a slowloris
        s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
        with s:
            took = closed_within(s, 6)
        check(took >= 0.4, "silent client closed after %.2f s, before the 0.8 s timeout" % took)
        # half a ClientHello (a record header announcing more): the same
        s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
        with s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01")
            took = closed_within(s, 6)
        check(took >= 0.4, "partial ClientHello closed after %.2f s" % took)
        # handshake done, then no request: the usual 408 (over TLS) and a close
        t = tls_connect(srv.tls_port, timeout=10)
        with t:
            t0 = time.time()
            st, _, _ = read_response(t)
            eq(st, 408, "status after a handshake and no request")
            check(time.time() - t0 < 6, "408 too late")
        eq(tls_request(srv.tls_port, "GET", "/health")[0], 200, "still serving")
    finally:
        stop_clean(srv, "tls-slow")


@test(server=None)
def garbage_instead_of_client_hello(ctx):
    srv = tls_server(ctx, "tls-garbage")
    try:
        for junk in (b"\x00" * 64, os.urandom(4096), b"\x16\x03\x03\x00\x05hello",
                     b"\x16\x03\x01\xff\xff" + os.urandom(300), b"SSH-2.0-OpenSSH_9.2\r\n"):
            s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
            with s:
                try:
                    s.sendall(junk)
                except (ConnectionResetError, BrokenPipeError):
                    continue
                closed_within(s, 5)
        # a client that goes away mid-handshake
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
            s.sendall(b"\x16\x03\x01")
            s.close()
        eq(tls_request(srv.tls_port, "GET", "/health")[0], 200, "serving after the garbage")
        check(wait_for(lambda: "TLS handshake with 127.0.0.1 failed" in srv.stderr(), 5),
              "no debug line naming the peer of a failed handshake: %s" % srv.stderr()[-800:])
    finally:
        stop_clean(srv, "tls-garbage")


# ---------------------------------------------------------------- settings


def run_once(ctx, env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BRISK_")}
    e.update({"BRISK_ADDR": "127.0.0.1:%d" % free_port(),
              "BRISK_DATABASE_URL": "sqlite:%s" % os.path.join(ctx.tmpdir(), "x.db")})
    e.update(env)
    p = subprocess.run([ctx.binary, "serve"], env=e, capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL, cwd=ctx.workdir)
    return p.returncode, p.stderr.decode("utf-8", "replace")


@test(server=None)
def bad_files_stop_start_up(ctx):
    c = certs(ctx)
    missing = os.path.join(ctx.workdir, "no-such.pem")
    junk = os.path.join(ctx.tmpdir(), "junk.pem")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    cases = [
        ({"BRISK_TLS_CERT": missing, "BRISK_TLS_KEY": c["ec"][1]}, "BRISK_TLS_CERT (--tls-cert)",
         "No such file"),
        ({"BRISK_TLS_CERT": junk, "BRISK_TLS_KEY": c["ec"][1]}, "BRISK_TLS_CERT (--tls-cert)", ""),
        ({"BRISK_TLS_CERT": c["ec"][0], "BRISK_TLS_KEY": junk}, "BRISK_TLS_KEY (--tls-key)", ""),
        ({"BRISK_TLS_CERT": c["rsa"][0], "BRISK_TLS_KEY": c["rsa2"][1]},
         "BRISK_TLS_KEY (--tls-key)", ""),
        ({"BRISK_TLS_CERT": c["ec"][0]}, "BRISK_TLS_KEY (--tls-key)", "must be set"),
        ({"BRISK_TLS_ADDR": "127.0.0.1:%d" % free_port()}, "BRISK_TLS_ADDR (--tls-addr)", ""),
        ({"BRISK_TLS_CERT": c["ec"][0], "BRISK_TLS_KEY": c["ec"][1], "BRISK_TLS_ADDR": "nope"},
         "BRISK_TLS_ADDR (--tls-addr)", ""),
    ]
    for env, setting, words in cases:
        rc, err = run_once(ctx, env)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        eq(rc, 2, "exit status for %s (stderr %r)" % (env, err[-400:]))
        check(len(lines) == 1 and lines[0].startswith("brisk: " + setting) and words in lines[0],
              "for %s expected one line naming %s: %r" % (env, setting, err[-400:]))


@test(server=None)
def cert_and_key_alone_make_brisk_addr_tls(ctx):
    cert, key = certs(ctx)["ec"]
    srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_TLS_CERT": cert,
                              "BRISK_TLS_KEY": key}, name="tls-only")
    srv.start(wait=False)
    try:
        def up():
            try:
                return tls_request(srv.port, "GET", "/health")[0] == 200
            except OSError:
                return srv.proc.poll() is not None
        check(wait_for(up, 20), "no TLS on BRISK_ADDR")
        check(srv.proc.poll() is None, "exited: %s" % srv.stderr()[-600:])
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with s:
            send_request(s, "GET", "/health")
            closed_within(s, 5)
    finally:
        stop_clean(srv, "tls-only")


# ---------------------------------------------------------------- reload


@test(server=None)
def sighup_reloads_the_pair(ctx):
    c = certs(ctx)
    srv = tls_server(ctx, "tls-reload", copy=True)
    try:
        eq(served_fingerprint(srv.tls_port), fingerprint_file(c["ec"][0]), "first certificate")
        # a TLS 1.2 session made before the reload (the ticket keys are process-wide)
        cc12 = client_ctx(maxv=ssl.TLSVersion.TLSv1_2)
        sess12 = tls_request(srv.tls_port, "GET", "/health", cctx=cc12)[3]["session"]
        # a keep-alive session made before the reload
        old = tls_connect(srv.tls_port)
        send_request(old, "GET", "/health", close=False)
        f = old.makefile("rb")
        eq(read_keepalive(f)[::2], (200, b"ok"), "old session, before")
        # a new pair (another key type, too), then SIGHUP
        shutil.copy(c["rsa"][0], srv.cert)
        shutil.copy(c["rsa"][1], srv.key)
        srv.send_sig(signal.SIGHUP)
        want = fingerprint_file(c["rsa"][0])
        check(wait_for(lambda: served_fingerprint(srv.tls_port) == want, 5),
              "new certificate not served after SIGHUP: %s" % srv.stderr()[-600:])
        send_request(old, "GET", "/health", close=False)
        eq(read_keepalive(f)[::2], (200, b"ok"), "the session from before the reload continues")
        st, _, _, info = tls_request(srv.tls_port, "GET", "/health", cctx=cc12, session=sess12)
        check(st == 200 and info["reused"], "a ticket from before the reload did not resume")
        old.close()
        # a broken pair: logged, the last good one stays
        with open(srv.cert, "w") as fh:
            fh.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        srv.send_sig(signal.SIGHUP)
        check(wait_for(lambda: "TLS reload failed" in srv.stderr(), 5),
              "a failed reload was not logged: %s" % srv.stderr()[-600:])
        check("BRISK_TLS_CERT" in srv.stderr().split("TLS reload failed", 1)[1].splitlines()[0],
              "the failed reload does not name the setting")
        eq(served_fingerprint(srv.tls_port), want, "certificate after a failed reload")
        # key that does not match the (restored) certificate
        shutil.copy(c["rsa"][0], srv.cert)
        shutil.copy(c["rsa2"][1], srv.key)
        srv.send_sig(signal.SIGHUP)
        check(wait_for(lambda: srv.stderr().count("TLS reload failed") >= 2, 5),
              "a mismatched key was not refused")
        eq(served_fingerprint(srv.tls_port), want, "certificate after a mismatched key")
        eq(tls_request(srv.tls_port, "GET", "/health")[0], 200, "serving")
        check(srv.proc.poll() is None, "the server died")
    finally:
        stop_clean(srv, "tls-reload")


@test(server=None)
def sighup_without_tls_is_harmless(ctx):
    # no certificate, also under run.py --transport tls
    srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_TLS_CERT": None, "BRISK_TLS_KEY": None},
                         name="hup-plain").start()
    try:
        srv.send_sig(signal.SIGHUP)
        check(wait_for(lambda: "nothing to reload" in srv.stderr(), 5), "SIGHUP not logged")
        check(srv.proc.poll() is None, "SIGHUP ended a server without TLS")
    finally:
        stop_clean(srv, "hup-plain")


@test(server=None)
def reload_under_load_with_the_sandbox(ctx):
    """Handshakes on both loops while SIGHUP swaps the context again and again, with the
    seccomp filter on (explicitly): nothing crashes, every request succeeds."""
    c = certs(ctx)
    srv = tls_server(ctx, "tls-churn", env={"BRISK_SANDBOX": "1"}, copy=True)
    errors = []
    stop = threading.Event()

    def client():
        cc = client_ctx()
        while not stop.is_set():
            try:
                st = tls_request(srv.tls_port, "GET", "/health", cctx=cc)[0]
                if st != 200:
                    errors.append(st)
            except (OSError, ssl.SSLError) as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for i in range(10):
            pair = c["rsa"] if i % 2 == 0 else c["ec"]
            shutil.copy(pair[0], srv.cert)
            shutil.copy(pair[1], srv.key)
            srv.send_sig(signal.SIGHUP)
            time.sleep(0.15)
        stop.set()
        for t in threads:
            t.join(10)
        check(not errors, "requests failed during reloads: %s" % errors[:5])
        eq(srv.stderr().count("TLS reloaded"), 10, "reloads logged")
        check(srv.proc.poll() is None, "server died: %s" % srv.stderr()[-800:])
    finally:
        stop.set()
        stop_clean(srv, "tls-churn")
