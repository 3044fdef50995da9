"""A hostile HTTP/2 (h2c) upstream for tests/h2_upstream_abuse.rs (Python
`h2` for framing, raw frames where h2 refuses to misbehave).

    python3 h2_hostile_upstream.py

Prints its port, serves on 127.0.0.1 until stdin closes, one thread per
connection. What it does with a request depends on its path:

  /ok           200 "ok" (a well-behaved answer, to show weir still works)
  /reset-head   RST_STREAM INTERNAL_ERROR instead of any answer
  /refused      RST_STREAM REFUSED_STREAM (the request was not processed)
  /reset-body   200 with part of a body, then RST_STREAM INTERNAL_ERROR
  /goaway       GOAWAY(last stream 0, PROTOCOL_ERROR) and close: this
                stream was never processed
  /goaway-mid   headers and part of a body, then GOAWAY naming this stream
                as processed, and the connection closed under it
  /bad-head     a response head with a connection-specific field
                (`connection: keep-alive`), malformed in HTTP/2
  /no-status    a response head without `:status`
  /ping-flood   10,000 PINGs, then 200 "ok"
  /huge-head    a response head of 8 x 16 KB header values (over weir's 64 KiB)
  /healthz      200, or 503 after a line "sick" on stdin (until a line "well")
  /port         200 with this server's port as the body
  /echo         200 with the request's body as its body (after END_STREAM),
                and `x-port` naming this server

A line "refuse" on stdin makes it refuse every stream with REFUSED_STREAM
once the request has ended (until a line "serve"), whatever the path.
"""

import socket
import struct
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.errors
import hpack


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def serve(sock):
    cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_outbound_headers=False)
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    sock.sendall(c.data_to_send())
    enc = hpack.Encoder()
    echo = {}
    refused = set()
    sock.settimeout(30)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers).get(":path", "/")
                    if REFUSE[0]:
                        refused.add(ev.stream_id)
                    elif path == "/echo":
                        echo[ev.stream_id] = b""
                    elif not answer(c, sock, ev.stream_id, path, enc):
                        return
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in refused:
                    refused.discard(ev.stream_id)
                    c.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id in (echo.keys() | refused):
                    if ev.stream_id in echo:
                        echo[ev.stream_id] += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in echo:
                    body = echo.pop(ev.stream_id)
                    hs = [(":status", "200"), ("content-length", str(len(body))), ("x-port", str(PORT[0]))]
                    c.send_headers(ev.stream_id, hs)
                    c.send_data(ev.stream_id, body, end_stream=True)
            sock.sendall(c.data_to_send())
    except (OSError, h2.exceptions.ProtocolError):
        return
    finally:
        sock.close()


SICK = [False]
REFUSE = [False]
PORT = [0]


def answer(c, sock, sid, path, enc):
    """False: the connection is done."""
    if path in ("/healthz", "/port"):
        body = str(PORT[0]).encode() if path == "/port" else b"health"
        status = "503" if path == "/healthz" and SICK[0] else "200"
        c.send_headers(sid, [(":status", status), ("content-length", str(len(body)))])
        c.send_data(sid, body, end_stream=True)
    elif path == "/ok":
        c.send_headers(sid, [(":status", "200"), ("content-length", "2")])
        c.send_data(sid, b"ok", end_stream=True)
    elif path == "/reset-head":
        c.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    elif path == "/refused":
        c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    elif path == "/reset-body":
        c.send_headers(sid, [(":status", "200"), ("content-length", "100")])
        c.send_data(sid, b"partial")
        c.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    elif path == "/goaway":
        c.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR, last_stream_id=0)
        sock.sendall(c.data_to_send())
        return False
    elif path == "/goaway-mid":
        c.send_headers(sid, [(":status", "200"), ("content-length", "100")])
        c.send_data(sid, b"partial")
        c.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=sid)
        sock.sendall(c.data_to_send())
        return False
    elif path == "/bad-head":
        # Through raw HPACK: h2 would refuse to send it.
        block = c.encoder.encode([(":status", "200"), ("connection", "keep-alive")])
        sock.sendall(c.data_to_send() + frame(0x1, 0x4 | 0x1, sid, block))
    elif path == "/no-status":
        block = c.encoder.encode([("content-type", "text/plain")])
        sock.sendall(c.data_to_send() + frame(0x1, 0x4 | 0x1, sid, block))
    elif path == "/ping-flood":
        sock.sendall(c.data_to_send() + b"".join(frame(0x6, 0, 0, struct.pack(">Q", i)) for i in range(10_000)))
        c.send_headers(sid, [(":status", "200"), ("content-length", "2")])
        c.send_data(sid, b"ok", end_stream=True)
    elif path == "/huge-head":
        block = c.encoder.encode([(":status", "200")] + [(f"x-big-{i}", "v" * 16_000) for i in range(8)])
        out = c.data_to_send()
        # HEADERS then CONTINUATIONs of at most 16 KiB each.
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        for n, ch in enumerate(chunks):
            last = n == len(chunks) - 1
            if n == 0:
                out += frame(0x1, 0x1 | (0x4 if last else 0), sid, ch)
            else:
                out += frame(0x9, 0x4 if last else 0, sid, ch)
        sock.sendall(out)
    else:
        c.send_headers(sid, [(":status", "404"), ("content-length", "0")], end_stream=True)
    return True


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    PORT[0] = srv.getsockname()[1]
    print(PORT[0], flush=True)

    def accept():
        while True:
            s, _ = srv.accept()
            threading.Thread(target=serve, args=(s,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    for line in sys.stdin:
        word = line.strip()
        if word in ("sick", "well"):
            SICK[0] = word == "sick"
        elif word in ("refuse", "serve"):
            REFUSE[0] = word == "refuse"


if __name__ == "__main__":
    main()
