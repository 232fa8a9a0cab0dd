#!/usr/bin/env python3
"""Write the HTTP/2 seeds of fuzz_h2 into fuzz/corpus/h2/.

Each seed is what a client sends after the connection preface (fuzz_h2 prepends it):
hand-made frame sequences built with hyperframe and hpack (Debian's python3-h2,
python3-hyperframe, python3-hpack). Run: python3 fuzz/corpus/gen_h2.py
"""
import os
import sys

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's packages under pyenv's python

from hpack import Encoder  # noqa: E402
from hyperframe.frame import (  # noqa: E402
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h2")
TOKEN = "Bearer fuzz-token"  # fuzz_h2's api token


def settings(**kv):
    f = SettingsFrame(0)
    for k, v in kv.items():
        f.settings[getattr(SettingsFrame, k.replace("SETTINGS_", ""))] = v
    return f.serialize()


def ack():
    return SettingsFrame(0, flags=["ACK"]).serialize()


def headers(enc, sid, method, path, extra=(), end_stream=True, auth=True):
    fields = [(":method", method), (":scheme", "http"), (":path", path),
              (":authority", "localhost")]
    if auth:
        fields.append(("authorization", TOKEN))
    fields += list(extra)
    flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
    return HeadersFrame(sid, enc.encode(fields), flags=flags).serialize()


def data(sid, body, end_stream=True):
    return DataFrame(sid, body, flags=["END_STREAM"] if end_stream else []).serialize()


def seeds():
    out = {}
    start = settings() + ack()
    e = Encoder()
    out["settings_only"] = settings(SETTINGS_MAX_CONCURRENT_STREAMS=100,
                                    SETTINGS_INITIAL_WINDOW_SIZE=65535) + ack()
    out["get_health"] = start + headers(e, 1, "GET", "/health", auth=False)
    e = Encoder()
    out["get_user"] = start + headers(e, 1, "GET", "/users/1")
    e = Encoder()
    out["get_user_deferred"] = start + headers(e, 1, "GET", "/users/2") + \
        headers(e, 3, "GET", "/users/7/orders")
    e = Encoder()
    body = b'{"name":"Ada","email":"ada@example.com"}'
    out["post_users"] = start + headers(
        e, 1, "POST", "/users",
        [("content-type", "application/json"), ("content-length", str(len(body)))],
        end_stream=False) + data(1, body[:10], False) + data(1, body[10:])
    e = Encoder()
    out["post_users_too_large"] = start + headers(
        e, 1, "POST", "/users", [("content-type", "application/json")],
        end_stream=False) + data(1, b"x" * 600, False) + data(1, b"", True)
    e = Encoder()
    out["ping_window"] = start + PingFrame(0, b"12345678").serialize() + \
        WindowUpdateFrame(0, window_increment=65535).serialize() + \
        headers(e, 1, "GET", "/health", auth=False) + \
        WindowUpdateFrame(1, window_increment=1000).serialize()
    e = Encoder()
    out["rst_stream"] = start + headers(e, 1, "GET", "/users/2") + \
        RstStreamFrame(1, error_code=8).serialize() + headers(e, 3, "GET", "/health", auth=False)
    e = Encoder()
    block = e.encode([(":method", "GET"), (":scheme", "http"), (":path", "/users/1"),
                      (":authority", "localhost"), ("authorization", TOKEN),
                      ("x-request-id", "fuzz-1234"), ("accept-encoding", "gzip")])
    out["continuation"] = start + HeadersFrame(1, block[:7], flags=["END_STREAM"]).serialize() + \
        ContinuationFrame(1, block[7:15]).serialize() + \
        ContinuationFrame(1, block[15:], flags=["END_HEADERS"]).serialize()
    e = Encoder()
    out["openapi_small_window"] = settings(SETTINGS_INITIAL_WINDOW_SIZE=100) + ack() + \
        headers(e, 1, "GET", "/openapi.json", [("accept-encoding", "gzip")], auth=False) + \
        WindowUpdateFrame(1, window_increment=30000).serialize()
    e = Encoder()
    out["priority_405_404"] = start + PriorityFrame(1, depends_on=0, stream_weight=16).serialize() + \
        headers(e, 1, "DELETE", "/health", auth=False) + headers(e, 3, "GET", "/nope") + \
        headers(e, 5, "OPTIONS", "/users") + headers(e, 7, "GET", "/users/1", auth=False)
    e = Encoder()
    out["trailers"] = start + headers(e, 1, "POST", "/orders",
                                      [("content-type", "application/json")],
                                      end_stream=False) + data(1, b'{"items":[]}', False) + \
        HeadersFrame(1, e.encode([("x-trailer", "1")]),
                     flags=["END_HEADERS", "END_STREAM"]).serialize()
    e = Encoder()
    out["many_streams_goaway"] = start + b"".join(
        headers(e, 2 * i + 1, "GET", "/users/%d" % (i % 5)) for i in range(10)) + \
        GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, blob in seeds().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(blob)
    print("%d seeds in %s" % (len(seeds()), OUT))


if __name__ == "__main__":
    main()
