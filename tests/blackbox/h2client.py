"""A small HTTP/2 client for the black-box harness (run.py --transport h2c), on
python3-h2 (Debian's package; `import h2.connection`).

    c = H2Conn(port)                       # h2c by prior knowledge (tls=True: h2 by ALPN)
    r = c.request("GET", "/health")        # one stream; returns a harness.Response
    rs = c.requests([("GET", "/a", None, []), ("POST", "/b", b"{}", [("content-type", ...)])])
    c.close()                              # several streams at once on one connection

or h2_request(port, method, path, body, headers, timeout) for one request on a
fresh connection (what harness.request() does in h2c mode). The Response has the
status, the headers with lower-case names (as HTTP/2 carries them), the body,
reason "" (HTTP/2 has none), has_close() False and head_bytes a text rendering
of the head ("HTTP/2 200\r\nname: value\r\n...", not wire bytes). A stream reset raises
harness.ProtocolError, a connection closed (or GOAWAY) before the response
EOFError, no response in time socket.timeout - the same as the HTTP/1.1 reader.
"""

import socket
import ssl
import sys
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError:  # a python3 that is not Debian's (pyenv, venv) may not see python3-h2
    sys.path.append("/usr/lib/python3/dist-packages")
    import h2.config  # noqa: E402
    import h2.connection  # noqa: E402
    import h2.events  # noqa: E402
    import h2.exceptions  # noqa: E402
    import h2.settings  # noqa: E402

import harness  # noqa: E402

# our receive window: big enough that a 100000-order batch answer needs few WINDOW_UPDATEs
RECV_WINDOW = 1 << 24


class _Stream:
    def __init__(self, method):
        self.method = method
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.ended = False
        self.reset = None  # error code of a RST_STREAM


class H2Conn:
    """One HTTP/2 connection: the preface and SETTINGS are sent at once, then
    request()/requests() open streams on it."""

    is_h2 = True  # harness.request(conn=...) sends over it

    def __init__(self, port, timeout=5.0, host="127.0.0.1", tls=False, authority=None):
        self.timeout = timeout
        self.tls = tls
        self.authority = authority or "%s:%d" % (host, port)
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            c.check_hostname = False
            c.verify_mode = ssl.CERT_NONE
            c.set_alpn_protocols(["h2"])
            try:
                sock = c.wrap_socket(sock)
            except BaseException:
                sock.close()
                raise
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                raise harness.ProtocolError("ALPN chose %r, not h2" % sock.selected_alpn_protocol())
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECV_WINDOW,
                                         h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECV_WINDOW)
        self.streams = {}
        self.goaway = None  # error code of a GOAWAY received
        self.eof = False
        self._flush()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def _pump(self, deadline):
        """Read once from the socket and handle the events; False on EOF."""
        if self.eof:
            return False
        remaining = deadline - time.time()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise harness.ProtocolError("HTTP/2 protocol error from the server: %s" % e)
        for ev in events:
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived) and st:
                hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers]
                st.status = int(dict(hdrs)[":status"])
                st.headers = [(k, v) for k, v in hdrs if not k.startswith(":")]
            elif isinstance(ev, h2.events.TrailersReceived) and st:
                st.headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers]
            elif isinstance(ev, h2.events.DataReceived):
                if st:
                    st.body += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and st:
                st.ended = True
            elif isinstance(ev, h2.events.StreamReset) and st:
                st.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
            # InformationalResponseReceived (1xx), SettingsAcknowledged, WindowUpdated,
            # PingReceived (h2 answers it itself), RemoteSettingsChanged: nothing to do
        self._flush()
        return True

    def send_request(self, method, path, body=None, headers=None, end=True):
        """Open a stream with this request; returns its id (read it with read_response)."""
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        if isinstance(body, str):
            body = body.encode("utf-8")
        authority = self.authority
        rest = []
        for k, v in headers or []:
            if k.lower() == "host":
                authority = v  # HTTP/2 carries Host as :authority (RFC 9113 8.3.1)
            else:
                rest.append((k.lower(), v))
        sid = self.h2.get_next_available_stream_id()
        self.streams[sid] = _Stream(method)
        hdrs = [(":method", method), (":scheme", "https" if self.tls else "http"),
                (":authority", authority), (":path", path)] + rest
        try:
            self.h2.send_headers(sid, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs],
                                 end_stream=not body and end)
        except h2.exceptions.ProtocolError as e:
            raise harness.ProtocolError("h2 refused to send this request: %s" % e)
        self._flush()
        if body:
            self._send_body(sid, bytes(body), end)
        return sid

    def _send_body(self, sid, body, end, deadline=None):
        deadline = deadline or time.time() + max(self.timeout, 30)
        off = 0
        while off < len(body):
            st = self.streams[sid]
            if st.reset is not None or st.ended:
                return  # the server answered (e.g. 413) before the whole body: stop sending
            n = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size,
                    len(body) - off)
            if n <= 0:
                if not self._pump(deadline):
                    return
                continue
            self.h2.send_data(sid, body[off:off + n], end_stream=end and off + n == len(body))
            off += n
            self._flush()

    def read_response(self, sid, timeout=None):
        """Wait for stream `sid` to end; its Response."""
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        st = self.streams[sid]
        while not st.ended and st.reset is None:
            if not self._pump(deadline):
                break
        if st.reset is not None and not st.ended:
            raise harness.ProtocolError("stream %d reset by the server (error code %s)" % (sid, st.reset))
        if not st.ended:
            if st.status is None:
                raise EOFError("connection closed before a response (GOAWAY %s)" % self.goaway)
            raise harness.ProtocolError("connection closed in the middle of the response body "
                                        "(have %d bytes)" % len(st.body))
        # head_bytes: the head rendered as text (HPACK has no bytes to show), for the
        # tests that scan it
        head = "HTTP/2 %d\r\n%s\r\n" % (st.status, "".join("%s: %s\r\n" % kv for kv in st.headers))
        r = harness.Response(st.status, "", st.headers, bytes(st.body), head.encode("latin-1"))
        r.proto = "HTTP/2"
        del self.streams[sid]
        return r

    def request(self, method, path, body=None, headers=None, timeout=None):
        return self.read_response(self.send_request(method, path, body, headers), timeout)

    def requests(self, reqs, timeout=None):
        """Several requests as concurrent streams on this connection: reqs is a list of
        (method, path, body, headers); returns their Responses in that order."""
        sids = [self.send_request(m, p, b, h) for m, p, b, h in reqs]
        return [self.read_response(s, timeout) for s in sids]


def h2_request(port, method, path, body=None, headers=None, timeout=5.0, tls=False):
    """One request on a fresh HTTP/2 connection (prior knowledge, or ALPN h2 with tls)."""
    with H2Conn(port, timeout=timeout, tls=tls) as c:
        return c.request(method, path, body, headers, timeout)
