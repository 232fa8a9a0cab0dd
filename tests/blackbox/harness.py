"""Black-box test harness for brisk: test registry, server processes, and a
strict raw-socket HTTP/1.1 response reader.  Python 3 standard library only
(plus python3-h2 for the HTTP/2 client, h2client.py, in h2c mode).

Transports (run.py --transport, TRANSPORT below): the same cases run
  h1   cleartext HTTP/1.1 (the default);
  tls  every server gets a throwaway certificate (BRISK_TLS_CERT/KEY, so its
       BRISK_ADDR speaks TLS) and every client path - request(), Ctx.req, Conn,
       connect(), wait_health, metrics reads - speaks TLS (ALPN http/1.1);
  h2c  request()/Ctx.req speak HTTP/2 by prior knowledge on the cleartext port;
       Conn (raw HTTP/1.1 bytes) stays HTTP/1.1, which that port speaks too, and
       so does a request() only HTTP/1.1 can express (version, Connection, ...).
A test that cannot run over a transport says so: @test(transports=("h1",),
reason="...") is reported as skipped, with the reason, over the others."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

# --------------------------------------------------------------------------
# registry

TESTS = []  # list of (name, group, fn)
SKIPS = {}  # name -> (transports it runs over, why not the others)
TRANSPORTS = ("h1", "tls", "h2c")


def test(name=None, server="default", transports=TRANSPORTS, reason=None):
    """Register a test.

        @test()                       name = module.function, server "default"
        @test(server="timers")        another server configuration (SERVER_CONFIGS)
        @test(server=None)            the test starts its own processes (ctx.server is None)
        @test("users: email domain")  an explicit name (docs/adding-an-endpoint.md style)
        @test(transports=("h1",), reason="...")   runs over those transports only
                                      (run.py --transport); skipped with the reason over others

    The function receives a Ctx (ctx.req / ctx.request / ctx.conn / ctx.create_user ...)."""
    if callable(name):  # bare @test
        fn, name = name, None
        return test()(fn)

    def deco(fn):
        mod = fn.__module__.replace("test_", "")
        full = name or "%s.%s" % (mod, fn.__name__)
        TESTS.append((full, server, fn))
        if tuple(transports) != TRANSPORTS:
            assert reason, "%s: transports=%r needs a reason" % (full, transports)
            SKIPS[full] = (tuple(transports), reason)
        return fn

    return deco


class TestFailure(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(actual, expected, what="value"):
    if actual != expected:
        raise TestFailure("%s: expected %r, got %r" % (what, expected, actual))


# --------------------------------------------------------------------------
# server configurations (environment on top of address + database)

TOKEN = "s3cr3t-T0ken-9f8e7d"

SERVER_CONFIGS = {
    # built-in defaults for every limit and timer
    "default": {"BRISK_THREADS": "2", "BRISK_LOG_FORMAT": "text"},
    # small limits
    "small": {
        "BRISK_THREADS": "2",
        "BRISK_MAX_BODY_BYTES": "1024",
        "BRISK_MAX_HEADER_BYTES": "2048",
        "BRISK_MAX_HEADERS": "20",
    },
    # short timers
    "timers": {
        "BRISK_THREADS": "2",
        "BRISK_HEADER_TIMEOUT_MS": "800",
        "BRISK_BODY_TIMEOUT_MS": "800",
        "BRISK_IDLE_TIMEOUT_MS": "800",
    },
    # API token, json logs
    "auth": {"BRISK_THREADS": "1", "BRISK_API_TOKEN": TOKEN, "BRISK_LOG_FORMAT": "json"},
}

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "ThreadSanitizer")


# --------------------------------------------------------------------------
# transports (run.py --transport; see the module docstring)

TRANSPORT = "h1"
TLS_CERT = TLS_KEY = None  # tls: the run's throwaway pair, made once by setup_transport
_PORT_TLS = {}  # port -> does the Server started on it speak TLS on BRISK_ADDR
_tls_client = []
H2_COUNTS = {"h2": 0, "h1": 0}  # h2c: request()s sent over HTTP/2, and those kept on HTTP/1.1
_h2_lock = threading.Lock()


def setup_transport(transport):
    """Select the transport; tls: make the run's self-signed ECDSA P-256 pair, in a
    directory of its own that the caller removes (returned; else None)."""
    global TRANSPORT, TLS_CERT, TLS_KEY
    assert transport in TRANSPORTS, transport
    TRANSPORT = transport
    if transport != "tls":
        return None
    d = tempfile.mkdtemp(prefix="brisk-blackbox-tls-")
    TLS_CERT, TLS_KEY = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=brisk-blackbox",
                    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-keyout", TLS_KEY, "-out", TLS_CERT], check=True, capture_output=True, timeout=60)
    # readable by a server that drops to BRISK_USER=nobody (test_sandbox): a throwaway key
    os.chmod(d, 0o755)
    os.chmod(TLS_KEY, 0o644)
    return d


def transport_env():
    """What the transport adds to every server's environment (tls: the certificate)."""
    if TRANSPORT == "tls":
        return {"BRISK_TLS_CERT": TLS_CERT, "BRISK_TLS_KEY": TLS_KEY}
    return {}


def port_tls(port):
    """Does the server on `port` speak TLS? What its Server's environment says, else
    the transport's default (a process a test started with base_env())."""
    return _PORT_TLS.get(port, TRANSPORT == "tls")


def tls_client_context():
    """The harness's TLS client: no verification (throwaway certificates), ALPN http/1.1."""
    if not _tls_client:
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        c.set_alpn_protocols(["http/1.1"])
        _tls_client.append(c)
    return _tls_client[0]


def connect(port, timeout=5.0, host="127.0.0.1"):
    """A connected TCP socket to `port` (TCP_NODELAY), a TLSSock over it when the server
    there speaks TLS: what a raw-socket test should use."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        s.close()
        raise
    return TLSSock(s) if port_tls(port) else s


class TLSSock:
    """The client end of a TLS connection, used like the TCP socket under it (send,
    sendall, recv, timeouts, non-blocking mode, select() on fileno(), setsockopt, close).

    Unlike ssl.SSLSocket, one thread may write while another reads (a test's sender
    thread): OpenSSL's SSL object is not thread-safe, and SSLSocket used so crashes
    Python. Here an ssl.SSLObject over memory BIOs makes and opens the records under a
    lock that is never held while waiting on the socket. The handshake runs on the
    first send or recv (or do_handshake()), so a connection still waiting in the
    accept backlog can be opened, as in cleartext. A peer's close without
    close_notify reads as EOF (b""), a TLS alert raises ssl.SSLError, and in
    non-blocking mode a partial record raises BlockingIOError, as a socket would."""

    def __init__(self, raw):
        self.raw = raw
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = tls_client_context().wrap_bio(self._in, self._out)
        self._lock = threading.Lock()  # the SSLObject and its BIOs
        self._wlock = threading.RLock()  # one writer (or the handshake) at a time: records in order
        self._pending = b""  # records made but not yet sent (non-blocking send)
        self._shaken = False

    def __getattr__(self, name):  # settimeout, setblocking, setsockopt, fileno, shutdown...
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        self.raw.close()

    def _flush(self, blocking=True):
        """Send the records made so far (all of them, or as many as the socket takes)."""
        with self._lock:
            self._pending += self._out.read()
        while self._pending:
            if blocking:
                self.raw.sendall(self._pending)
                n = len(self._pending)
            else:
                n = self.raw.send(self._pending)
            self._pending = self._pending[n:]

    def _feed(self):
        """Read records from the socket into the SSLObject; False on EOF."""
        data = self.raw.recv(65536)
        if not data:
            return False
        with self._lock:
            self._in.write(data)
        return True

    def do_handshake(self):
        if self._shaken:
            return
        with self._wlock:
            while not self._shaken:
                with self._lock:
                    try:
                        self._obj.do_handshake()
                        self._shaken = True
                    except ssl.SSLWantReadError:
                        pass
                self._flush()
                if not self._shaken and not self._feed():
                    raise ConnectionResetError("connection closed during the TLS handshake")

    def version(self):
        return self._obj.version()

    def selected_alpn_protocol(self):
        return self._obj.selected_alpn_protocol()

    def send(self, data):
        """All of data is taken, or none (BlockingIOError, in non-blocking mode)."""
        self.do_handshake()
        with self._wlock:
            blocking = self.raw.gettimeout() != 0
            if self._pending:
                self._flush(blocking)
                if self._pending:
                    raise BlockingIOError("socket full")
            with self._lock:
                self._obj.write(data)
            try:
                self._flush(blocking)
            except BlockingIOError:
                pass  # the rest of these records goes first next time
            return len(data)

    def sendall(self, data):
        # in slices: no records are made for megabytes the peer refuses; big ones, so that
        # what fits the socket buffer goes in one call, as in cleartext
        view = memoryview(data)
        for i in range(0, max(1, len(view)), 1 << 20):
            self.send(view[i:i + (1 << 20)])
            with self._wlock:
                self._flush()

    def recv(self, n):
        """Up to n bytes: all the records already read give (one read gives one record,
        16 KiB at most; big bodies would come in many small pieces).

        Once the peer's close_notify is in, SSLObject.read() returns b"" (it raises
        SSLZeroReturnError only in some versions): that is EOF, after what came before.
        Reading on past it looped here for ever, appending b"" to `out` - the runner's
        memory growth over TLS (a response and close_notify in one read, e.g. HTTP/1.0)."""
        self.do_handshake()
        while True:
            with self._lock:
                out, got = [], 0
                try:
                    while got < n:
                        # a record is 16 KiB at most; read(len) allocates len bytes first
                        d = self._obj.read(min(n - got, 16384))
                        if not d:  # close_notify
                            return b"".join(out)
                        out.append(d)
                        got += len(d)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:  # close_notify: EOF after what came before
                    return b"".join(out)
                if got:
                    return b"".join(out)
            if not self._feed():
                return b""


def url(port, path="/"):
    """http://127.0.0.1:PORT/path, or https:// when the server there speaks TLS (curl -k, wrk)."""
    return "%s://127.0.0.1:%d%s" % ("https" if port_tls(port) else "http", port, path)


# --------------------------------------------------------------------------
# PostgreSQL mode (run.py --database-url URL)
#
# DATABASE_URL is the URL of a PostgreSQL server the suite may create databases
# on (a superuser, e.g. scripts/pg_cluster.sh's). Every Server then gets its own
# fresh database instead of a SQLite file: one per server profile, one per
# test-started server; servers given the same db_path share one database (a
# restart on "the same file"). Tests that name a SQLite URL themselves keep it.

DATABASE_URL = None
_pg_lock = threading.Lock()
_pg_dbs = {}  # db_path or unique key -> database name
_pg_seq = [0]

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PG_CLUSTER = os.path.join(REPO, "scripts", "pg_cluster.sh")


def pg_mode():
    return bool(DATABASE_URL)


def pg_url_with_db(url, dbname):
    """`url` (postgres://...) naming database `dbname` instead."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def pg_cluster(cmd, *dirs, timeout=120):
    """Run scripts/pg_cluster.sh CMD DIR... and return what it printed (a URL for
    start and replica). Raises TestFailure with its stderr when it fails."""
    p = subprocess.run(["bash", PG_CLUSTER, cmd] + list(dirs), capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        fail("pg_cluster.sh %s: %s" % (cmd, p.stderr.decode("utf-8", "replace")[-800:]))
    return p.stdout.decode().strip()


def wait_for(pred, timeout, step=0.1):
    """Poll pred() every `step` seconds for up to `timeout`; its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def psql(url, sql, timeout=60):
    """Run SQL with psql on `url`; returns stdout (unaligned, tuples only). Raises TestFailure."""
    exe = shutil.which("psql") or "/usr/bin/psql"
    p = subprocess.run([exe, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        fail("psql %r: %s" % (sql[:80], p.stderr.decode("utf-8", "replace").strip()[-500:]))
    return p.stdout.decode("utf-8", "replace")


def pg_database(key=None):
    """URL of a fresh database (or, for a key seen before, the same one)."""
    with _pg_lock:
        if key is not None and key in _pg_dbs:
            return pg_url_with_db(DATABASE_URL, _pg_dbs[key])
        _pg_seq[0] += 1
        name = "bb_%d_%d" % (os.getpid(), _pg_seq[0])
        _pg_dbs[key if key is not None else "#%d" % _pg_seq[0]] = name
    psql(DATABASE_URL, "CREATE DATABASE %s" % name)
    return pg_url_with_db(DATABASE_URL, name)


def pg_drop_all():
    """Drop every database the suite created (at the end of the run)."""
    with _pg_lock:
        names = list(_pg_dbs.values())
        _pg_dbs.clear()
    for name in names:
        try:
            psql(DATABASE_URL, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        except Exception:  # noqa: BLE001 - best effort
            pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def base_env():
    """The environment for a brisk process: ours without BRISK_*, plus the transport's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRISK_")}
    env.update(transport_env())
    return env


class Server:
    """One brisk process on a loopback port with its own SQLite file (or, in
    PostgreSQL mode, its own database; see DATABASE_URL)."""

    def __init__(self, binary, workdir, env=None, db_path=None, port=None, name="srv"):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.port = port or free_port()
        self.db_path = db_path or os.path.join(workdir, "%s.db" % name)
        self.extra_env = dict(env or {})
        self.proc = None
        self.stderr_path = os.path.join(workdir, "%s.%d.stderr" % (name, self.port))
        self.stdout_path = os.path.join(workdir, "%s.%d.stdout" % (name, self.port))

    def start(self, wait=True, timeout=20.0):
        env = base_env()
        env["BRISK_ADDR"] = "127.0.0.1:%d" % self.port
        if pg_mode():
            if getattr(self, "db_url", None) is None:
                self.db_url = pg_database(self.db_path)
            env["BRISK_DATABASE_URL"] = self.db_url
        else:
            env["BRISK_DATABASE_URL"] = "sqlite:%s" % self.db_path
        # The drain grace (BRISK_DRAIN_GRACE_MS, 1.5 s by default) would add its
        # length to every one of the suite's hundreds of stops; the drain tests
        # (test_drain_grace.py, test_rolling_restart.py) set it, or None to
        # leave the variable unset and get the default.
        env["BRISK_DRAIN_GRACE_MS"] = "0"
        for k, v in self.extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        # its main port speaks TLS with a certificate and no BRISK_TLS_ADDR of its own
        self.tls = bool(env.get("BRISK_TLS_CERT")) and not env.get("BRISK_TLS_ADDR")
        _PORT_TLS[self.port] = self.tls
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            cwd=self.workdir
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail("%s exited with %s during start-up: %s"
                     % (self.name, self.proc.returncode, self.stderr()[-2000:]))
            try:
                r = request(self.port, "GET", "/health", timeout=2.0, check_common=False)
                if r.status == 200:
                    return
            except (OSError, TestFailure, ProtocolError):
                pass
            time.sleep(0.05)
        fail("%s did not answer /health within %.0f s" % (self.name, timeout))

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def send_sig(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_files()

    def _close_files(self):
        if _PORT_TLS.get(self.port) == self.tls:
            _PORT_TLS.pop(self.port, None)  # the port may serve another process next
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f and not f.closed:
                f.close()

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Stop with `sig`; return a failure reason string or None."""
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._close_files()
            return "server had already exited with status %s; stderr tail: %s" % (
                rc, self.stderr()[-1500:])
        self.proc.send_signal(sig)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
            return "server did not exit within %.0f s of %s" % (timeout, sig.name)
        self._close_files()
        if rc != 0:
            return "exit status %s after %s; %s" % (rc, sig.name, self.exit_details())
        return self.sanitizer_report()

    def exit_details(self):
        return self.sanitizer_report() or "stderr tail: %s" % self.stderr()[-800:]

    def sanitizer_report(self):
        return sanitizer_summary(self.stderr())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def sanitizer_summary(err):
    """None if `err` has no sanitizer output, else a compact one-paragraph report:
    the ERROR line, the first frames of each stack, and the SUMMARY line."""
    if not any(m in err for m in SANITIZER_MARKERS):
        return None
    lines = err.splitlines()
    out = []
    frames = 0
    for ln in lines:
        t = ln.strip()
        if ("ERROR: " in t and "Sanitizer" in t) or "runtime error" in t:
            out.append(t.split("ERROR: ", 1)[-1].split(" at pc ")[0].split(" on address ")[0])
            frames = 0
        elif t.startswith(("READ of", "WRITE of", "freed by", "previously allocated",
                           "Direct leak", "Indirect leak")):
            out.append("| " + t.split(" at 0x")[0].split(" allocated from")[0])
            frames = 0
        elif re.match(r"^#\d+ 0x[0-9a-f]+ in ", t) and frames < 4:
            fr = re.sub(r"^#\d+ 0x[0-9a-f]+ in ", "", t)
            if "libsanitizer" not in fr and "interceptor" not in fr:
                out.append(fr)
                frames += 1
        elif t.startswith("SUMMARY:"):
            out.append(t)
    return "sanitizer report: " + "; ".join(out)[:1500]


# --------------------------------------------------------------------------
# strict response reader

class ProtocolError(Exception):
    pass


TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
STATUS_RE = re.compile(rb"^HTTP/1\.1 ([1-5][0-9][0-9]) ([\t !-~]*)$")
IMF_FIXDATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (0[1-9]|[12][0-9]|3[01]) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] GMT$"
)


class Response:
    def __init__(self, status, reason, headers, body, head_bytes):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as str
        self.body = body
        self.head_bytes = head_bytes
        self.proto = "HTTP/1.1"  # "HTTP/2" from h2client
        self.closed = None  # set by helpers that observe the connection afterwards

    def all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name):
        vals = self.all(name)
        if len(vals) > 1:
            fail("header %s appears %d times: %r" % (name, len(vals), vals))
        return vals[0] if vals else None

    def has_close(self):
        v = self.header("Connection")
        return v is not None and "close" in [t.strip().lower() for t in v.split(",")]

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail("body is not JSON (%s): %r" % (e, self.body[:300]))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.headers, self.body[:200])


class Conn:
    """A raw TCP connection (TLS when the server speaks it: connect()) with a
    buffered strict HTTP/1.1 response reader."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1"):
        self.timeout = timeout
        self.sock = connect(port, timeout, host)
        self.buf = b""
        self.eof = False
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """send that reports a peer reset/close instead of raising"""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return False

    def _fill(self, deadline):
        """Read more bytes; returns False on EOF.  Raises socket.timeout past deadline."""
        if self.eof:
            return False
        remaining = deadline - time.time()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):  # an SSLError: a TLS alert or bad record
            self.eof = True
            self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _need(self, n, deadline, what):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ProtocolError("connection closed in the middle of %s (have %d of %d bytes)"
                                    % (what, len(self.buf), n))

    def _line(self, deadline, what, limit=65536):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 2:]
                if b"\n" in line or b"\r" in line:
                    raise ProtocolError("bare CR/LF in %s: %r" % (what, line))
                return line
            if len(self.buf) > limit:
                raise ProtocolError("%s longer than %d bytes" % (what, limit))
            if not self._fill(deadline):
                if not self.buf and what == "status line":
                    raise EOFError("connection closed before a response")
                raise ProtocolError("connection closed in the middle of %s: %r" % (what, self.buf[:200]))

    def read_response(self, method="GET", timeout=None):
        """Read one response (1xx included).  Raises EOFError if the peer closed
        before sending any byte, socket.timeout on timeout, ProtocolError on
        malformed framing."""
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        start_len = len(self.buf)
        status_line = self._line(deadline, "status line")
        m = STATUS_RE.match(status_line)
        if not m:
            raise ProtocolError("bad status line %r" % status_line)
        status = int(m.group(1))
        reason = m.group(2).decode("latin-1")
        headers = []
        head = [status_line]
        while True:
            line = self._line(deadline, "header line")
            head.append(line)
            if line == b"":
                break
            if len(headers) > 200:
                raise ProtocolError("more than 200 response headers")
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError("obs-fold in response: %r" % line)
            if b":" not in line:
                raise ProtocolError("response header without colon: %r" % line)
            name, value = line.split(b":", 1)
            if not TOKEN_RE.match(name):
                raise ProtocolError("bad response header name %r" % name)
            value = value.strip(b" \t")
            for ch in value:
                if (ch < 0x20 and ch != 0x09) or ch == 0x7F:
                    raise ProtocolError("control byte in response header %r" % line)
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        resp = Response(status, reason, headers, b"", b"\r\n".join(head) + b"\r\n")
        te = resp.all("Transfer-Encoding")
        cl = resp.all("Content-Length")
        if te and cl:
            raise ProtocolError("response has both Transfer-Encoding and Content-Length")
        if len(cl) > 1:
            raise ProtocolError("response has %d Content-Length headers" % len(cl))
        if status < 200 or status in (204, 304):
            if te:
                raise ProtocolError("%d response with Transfer-Encoding" % status)
            if status < 200 or status == 204:
                if cl:
                    raise ProtocolError("%d response with Content-Length" % status)
            return resp
        if method == "HEAD":
            return resp
        if te:
            if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                raise ProtocolError("unexpected response Transfer-Encoding %r" % te)
            body = b""
            while True:
                line = self._line(deadline, "chunk size")
                size_txt = line.split(b";", 1)[0]
                if not re.match(rb"^[0-9A-Fa-f]{1,16}$", size_txt):
                    raise ProtocolError("bad chunk size %r" % line)
                size = int(size_txt, 16)
                if size == 0:
                    while self._line(deadline, "trailer") != b"":
                        pass
                    break
                self._need(size + 2, deadline, "chunk data")
                body += self.buf[:size]
                if self.buf[size:size + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                self.buf = self.buf[size + 2:]
            resp.body = body
            return resp
        if cl:
            if not re.match(r"^[0-9]{1,18}$", cl[0]):
                raise ProtocolError("bad response Content-Length %r" % cl[0])
            n = int(cl[0])
            self._need(n, deadline, "response body")
            resp.body = self.buf[:n]
            self.buf = self.buf[n:]
            return resp
        # read until close
        while self._fill(deadline):
            pass
        resp.body = self.buf
        self.buf = b""
        return resp

    def read_rest(self, timeout=3.0):
        """Read until EOF.  Returns (bytes, state) with state 'eof' or 'timeout'."""
        deadline = time.time() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            data, self.buf = self.buf, b""
            return data, "timeout"
        data, self.buf = self.buf, b""
        return data, "eof"

    def quiet_for(self, seconds):
        """True if nothing arrives (and no EOF) for `seconds`."""
        try:
            if self._fill(time.time() + seconds):
                return False
            return False  # EOF
        except socket.timeout:
            return not self.buf


# --------------------------------------------------------------------------
# request helpers


def build_request(method, path, body=None, headers=None, version="HTTP/1.1", host=True,
                  content_type="application/json"):
    lines = ["%s %s %s" % (method, path, version)]
    hdrs = list(headers or [])
    names = [h[0].lower() for h in hdrs]
    if host and "host" not in names:
        lines.append("Host: 127.0.0.1")
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if content_type and "content-type" not in names:
            lines.append("Content-Type: %s" % content_type)
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append("Content-Length: %d" % len(body))
    for k, v in hdrs:
        lines.append("%s: %s" % (k, v))
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    if body is not None:
        raw += body
    return raw


def wait_health(port, proc, timeout=15.0):
    """Poll GET /health on a server process started by hand until it answers 200
    (True), it exits or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if request(port, "GET", "/health", timeout=1, check_common=False).status == 200:
                return True
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------
# every response request() reads, kept for the check against the OpenAPI
# document at the end of the run (test_openapi.py, run.py's final checks)

RESPONSES = []  # dicts: method, path, status, content_type, headers, body
RECORD_PER_KEY = 2000  # responses kept per method + path shape + status
RECORD_BIG_PER_KEY = 3  # of those, bodies over RECORD_BIG_BYTES (a 100000-order batch)
RECORD_BIG_BYTES = 1 << 20
_rec_lock = threading.Lock()
_rec_counts = {}
FINAL_CHECKS = []  # (name, fn): run by run.py after every test, each counted as a test
FILTERED = False  # run.py -k: only some tests ran (final checks then expect less coverage)


def final_check(name):
    """Register fn() to run once all tests are done (it sees RESPONSES); a
    TestFailure or a failed assert counts as a failed test named `name`."""
    def deco(fn):
        FINAL_CHECKS.append((name, fn))
        return fn
    return deco


def record_response(method, path, r):
    """Keep (method, path, status, content type, headers, body) of a response
    brisk sent (Server: brisk: not a balancer's own page), bounded per key.
    Path ids are folded into the key ("/users/#"), so a suite of many users
    keeps RECORD_PER_KEY of each route and status, not of each user."""
    if not any(k.lower() == "server" and v == "brisk" for k, v in r.headers):
        return
    if isinstance(path, bytes):
        path = path.decode("latin-1")
    shape = re.sub(r"/[0-9]+(?=/|$)", "/#", path.split("?", 1)[0])
    key = (method, shape, r.status)
    big = len(r.body) > RECORD_BIG_BYTES
    with _rec_lock:
        n, nbig = _rec_counts.get(key, (0, 0))
        if n >= RECORD_PER_KEY or (big and nbig >= RECORD_BIG_PER_KEY):
            return
        _rec_counts[key] = (n + 1, nbig + big)
        ctype = [v for k, v in r.headers if k.lower() == "content-type"]
        RESPONSES.append({"method": method, "path": path, "status": r.status,
                          "content_type": ctype[0] if ctype else None,
                          "headers": list(r.headers), "body": r.body})


def request(port, method, path, body=None, headers=None, timeout=5.0, check_common=True,
            conn=None, **kw):
    """One request on a fresh connection (or `conn`: a Conn, or an h2client.H2Conn);
    returns the Response. h2c mode: over HTTP/2 unless only HTTP/1.1 can say it."""
    h2 = (conn is None and TRANSPORT == "h2c" and not port_tls(port)
          and h2_can_carry(path, headers, **kw)) or getattr(conn, "is_h2", False)
    if TRANSPORT == "h2c" and conn is None:
        with _h2_lock:
            H2_COUNTS["h2" if h2 else "h1"] += 1
    try:
        r = (_request_h2 if h2 else _request_h1)(port, method, path, body, headers, timeout, conn, **kw)
    except socket.timeout:
        fail("%s %s: no response within %.1f s" % (method, path, timeout))
    except EOFError:
        fail("%s %s: connection closed without a response" % (method, path))
    except ProtocolError as e:
        fail("%s %s: malformed response: %s" % (method, path, e))
    record_response(method, path, r)
    if check_common:
        common_checks(r, method)
    return r


def _request_h1(port, method, path, body, headers, timeout, conn, **kw):
    raw = build_request(method, path, body, headers, **kw)
    c = conn or Conn(port, timeout=timeout)
    try:
        c.send(raw)
        r = c.read_response(method=method, timeout=timeout)
        while 100 <= r.status < 200:
            r = c.read_response(method=method, timeout=timeout)
        return r
    finally:
        if conn is None:
            c.close()


# header fields HTTP/2 forbids (RFC 9113 8.2.2): a request with one stays on HTTP/1.1
H1_ONLY_FIELDS = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")


def h2_can_carry(path, headers=None, version="HTTP/1.1", host=True, **_kw):
    """Can this request() go over HTTP/2 as it is? Not when it depends on HTTP/1.1's
    syntax: another version, no Host, a connection-specific field, an explicit
    Content-Length (a framing case), two Hosts, a field HTTP/2 cannot carry (upper-case
    or non-token name, CR/LF/NUL or surrounding spaces in a value), a non-origin target."""
    if version != "HTTP/1.1" or host is not True:
        return False
    p = path.decode("latin-1") if isinstance(path, bytes) else path
    if not (p.startswith("/") or p == "*") or any(not 0x21 <= ord(ch) <= 0x7E for ch in p):
        return False
    names = [k.lower() for k, _ in headers or []]
    if names.count("host") > 1 or "content-length" in names:
        return False
    for k, v in headers or []:
        if isinstance(k, bytes) or isinstance(v, bytes) or not TOKEN_RE.match(k.encode("latin-1")):
            return False
        if k.lower() in H1_ONLY_FIELDS or (k.lower() == "te" and v.strip().lower() != "trailers"):
            return False
        if v != v.strip(" \t") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v):
            return False
    return True


def _request_h2(port, method, path, body, headers, timeout, conn, content_type="application/json", **_kw):
    import h2client  # noqa: PLC0415 - python3-h2 is needed in h2c mode only

    hdrs = list(headers or [])
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        names = [k.lower() for k, _ in hdrs]
        if content_type and "content-type" not in names:
            hdrs.append(("content-type", content_type))
        hdrs.append(("content-length", str(len(body))))  # as curl and browsers send it
    if conn is not None:
        return conn.request(method, path, body, hdrs, timeout)
    return h2client.h2_request(port, method, path, body, hdrs, timeout)


def common_checks(r, method="GET"):
    """Headers every response must carry (API.md wire rules)."""
    where = "%d response" % r.status
    d = r.header("Date")
    check(d is not None, "%s: no Date header" % where)
    check(IMF_FIXDATE_RE.match(d), "%s: Date %r is not IMF-fixdate" % (where, d))
    eq(r.header("Server"), "brisk", "%s: Server header" % where)
    rid = r.header("X-Request-Id")
    check(rid is not None and 1 <= len(rid) <= 128 and all(0x20 <= ord(c) < 0x7F for c in rid),
          "%s: bad X-Request-Id %r" % (where, rid))
    if r.proto == "HTTP/2":
        # no connection-specific fields (RFC 9113 8.2.2); Content-Length optional, and exact
        for name in H1_ONLY_FIELDS:
            check(r.header(name) is None, "%s: HTTP/2 response with %s" % (where, name))
        cl = r.header("Content-Length")
        if cl is not None and method != "HEAD" and r.status not in (204, 304):
            eq(cl, str(len(r.body)), "%s: HTTP/2 Content-Length" % where)
    if r.status >= 200 and r.status not in (204, 304):
        check(r.header("Content-Type") is not None, "%s: no Content-Type" % where)
        check(r.proto == "HTTP/2" or r.header("Content-Length") is not None
              or r.header("Transfer-Encoding") is not None,
              "%s: neither Content-Length nor Transfer-Encoding" % where)
    if r.status == 204:
        check(r.header("Content-Length") is None, "204 with Content-Length")
        check(r.header("Content-Type") is None, "204 with Content-Type")
    if r.status >= 400 and method != "HEAD":
        ct = r.header("Content-Type") or ""
        check(ct.split(";")[0].strip().lower() == "application/json",
              "%s: error Content-Type %r is not application/json" % (where, ct))
        j = r.json()
        check(isinstance(j, dict) and list(j.keys()) == ["error"] and isinstance(j["error"], str)
              and j["error"], "%s: error body is not {\"error\":\"...\"}: %r" % (where, r.body[:300]))
        check(j["error"] == j["error"].lower(), "%s: error message not lowercase: %r" % (where, j["error"]))


def expect_error(r, status, message=None, prefix=None):
    if r.status != status:
        fail("expected %d, got %d %r" % (status, r.status, r.body[:300]))
    j = r.json()
    if message is not None:
        eq(j.get("error"), message, "error message")
    if prefix is not None:
        check(str(j.get("error", "")).startswith(prefix),
              "error message %r does not start with %r" % (j.get("error"), prefix))
    return j


_uniq_lock = threading.Lock()
_uniq = [0]


def uniq(prefix="u"):
    with _uniq_lock:
        _uniq[0] += 1
        return "%s%d-%d" % (prefix, os.getpid(), _uniq[0])


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels)): float}; checks line syntax."""
    out = {}
    line_re = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? '
        r'([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))( [0-9]+)?$')
    for ln in text.split("\n"):
        if ln == "" or ln.startswith("#"):
            if ln.startswith("# TYPE "):
                parts = ln.split()
                check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"),
                      "bad TYPE line %r" % ln)
            continue
        m = line_re.match(ln)
        check(m, "metrics line does not match the exposition format: %r" % ln)
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        key = (m.group(1), labels)
        check(key not in out, "duplicate metric series %r" % ln)
        out[key] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())))


def metric_sum(metrics, name, **labels):
    """Sum of the series of `name` whose labels include `labels` (None when there is none):
    http_requests_total{method,route,status} over both values of its proto label."""
    want = set(labels.items())
    vals = [v for (n, ls), v in metrics.items() if n == name and want <= ls]
    return sum(vals) if vals else None


class Ctx:
    """What a test function receives."""

    def __init__(self, binary, workdir, server=None, group=None):
        self.binary = binary
        self.workdir = workdir
        self.server = server
        self.group = group

    @property
    def port(self):
        return self.server.port

    def req(self, method, path, body=None, headers=None, **kw):
        if isinstance(headers, dict):
            headers = list(headers.items())
        return request(self.server.port, method, path, body, headers, **kw)

    request = req

    def create_user(self, name, email, headers=None):
        r = self.req("POST", "/users", {"name": name, "email": email}, headers)
        if r.status != 201:
            fail("create_user(%r, %r): %d %r" % (name, email, r.status, r.body[:300]))
        return r.json()

    def conn(self, timeout=5.0):
        return Conn(self.server.port, timeout=timeout)

    def new_server(self, env=None, name="extra", db_path=None, port=None):
        return Server(self.binary, self.workdir, env=env, name=name, db_path=db_path, port=port)

    def tmpdir(self):
        return tempfile.mkdtemp(dir=self.workdir)
