"""HTTP/2 abuse client for tests/h2_abuse.rs (Python `h2` for framing and
HPACK; raw frames where h2 refuses to misbehave).

    python3 h2_abuse.py HOST PORT MODE

Prints one JSON object: what came back (goaway, error code, resets, responses,
whether the connection was closed) and how many frames were sent. Bounded:
every mode sends a fixed number of frames and reads for at most a few seconds.
"""

import json
import socket
import struct
import sys
import time

import h2.config
import hpack
import h2.connection
import h2.events
import h2.exceptions

HOST, PORT, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/abuse")]


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


class Client:
    def __init__(self, validate=True):
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=False,
        )
        self.c = h2.connection.H2Connection(config=cfg)
        self.s = socket.create_connection((HOST, PORT), timeout=5)
        self.c.initiate_connection()
        self.flush()
        self.decoder = hpack.Decoder()
        self.out = {"goaway": False, "error_code": None, "resets": 0, "responses": {}, "closed": False, "sent": 0}

    def flush(self):
        data = self.c.data_to_send()
        if data:
            try:
                self.s.sendall(data)
            except OSError:
                self.out["closed"] = True

    def raw(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            self.out["closed"] = True

    def read(self, seconds):
        """Parse the server's frames ourselves (h2's state machine would
        trip over what we sent on purpose)."""
        deadline = time.time() + seconds
        self.s.settimeout(0.2)
        buf = b""
        while time.time() < deadline:
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.out["closed"] = True
                return
            if not data:
                self.out["closed"] = True
                return
            buf += data
            while len(buf) >= 9:
                length = int.from_bytes(buf[0:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, flags = buf[3], buf[4]
                payload = buf[9 : 9 + length]
                buf = buf[9 + length :]
                if ftype == 0x7:
                    self.out["goaway"] = True
                    self.out["error_code"] = int.from_bytes(payload[4:8], "big")
                elif ftype == 0x3:
                    self.out["resets"] += 1
                elif ftype == 0x1:
                    block = payload
                    if flags & 0x8:
                        pad = block[0]
                        block = block[1 : len(block) - pad]
                    if flags & 0x20:
                        block = block[5:]
                    try:
                        headers = dict(self.decoder.decode(block))
                        status = headers.get(":status", headers.get(b":status", "?"))
                        if isinstance(status, bytes):
                            status = status.decode()
                    except Exception:
                        status = "?"
                    self.out["responses"][status] = self.out["responses"].get(status, 0) + 1
                elif ftype == 0x4 and not flags & 0x1:
                    self.raw(frame(0x4, 0x1, 0))


def main():
    if MODE == "rapid_reset":
        cl = Client()
        for i in range(5000):
            sid = cl.c.get_next_available_stream_id()
            cl.c.send_headers(sid, REQ, end_stream=True)
            cl.c.reset_stream(sid)
            cl.out["sent"] += 2
            if i % 100 == 0:
                cl.flush()
                if cl.out["closed"]:
                    break
        cl.flush()
        cl.read(3)
    elif MODE == "continuation_flood":
        cl = Client()
        # HEADERS without END_HEADERS, then CONTINUATION frames forever.
        block = cl.c.encoder.encode(REQ)
        cl.raw(frame(0x1, 0x0, 1, block))
        junk = cl.c.encoder.encode([("x-flood", "a" * 1000)])
        for _ in range(2000):
            cl.raw(frame(0x9, 0x0, 1, junk))
            cl.out["sent"] += 1
            if cl.out["closed"]:
                break
        cl.read(3)
    elif MODE == "empty_data_flood":
        cl = Client()
        sid = 1
        cl.raw(frame(0x1, 0x4, sid, cl.c.encoder.encode([(":method", "POST")] + REQ[1:])))
        for i in range(50000):
            cl.raw(frame(0x0, 0x0, sid))
            cl.out["sent"] += 1
            if cl.out["closed"]:
                break
        cl.read(3)
    elif MODE == "ping_flood":
        cl = Client()
        for i in range(50000):
            cl.raw(frame(0x6, 0x0, 0, struct.pack(">Q", i)))
            cl.out["sent"] += 1
            if cl.out["closed"]:
                break
        cl.read(3)
    elif MODE == "settings_flood":
        cl = Client()
        payload = struct.pack(">HI", 0x3, 100)
        for _ in range(50000):
            cl.raw(frame(0x4, 0x0, 0, payload))
            cl.out["sent"] += 1
            if cl.out["closed"]:
                break
        cl.read(3)
    elif MODE == "too_many_streams":
        cl = Client()
        # Acknowledge the server's SETTINGS first: its stream limit applies
        # from then on (RFC 9113 §6.5.3).
        cl.read(0.5)
        # Open 300 streams without ending them (server allows 100).
        for i in range(300):
            sid = 1 + 2 * i
            cl.raw(frame(0x1, 0x4, sid, cl.c.encoder.encode([(":method", "POST")] + REQ[1:])))
            cl.out["sent"] += 1
        cl.read(3)
    elif MODE in ("uppercase", "connection_header", "authority_conflict", "ok"):
        cl = Client(validate=False)
        headers = list(REQ)
        if MODE == "uppercase":
            headers.append(("X-Upper", "1"))
        elif MODE == "connection_header":
            headers.append(("connection", "keep-alive"))
        elif MODE == "authority_conflict":
            headers.append(("host", "other.example"))
        sid = 1
        cl.raw(frame(0x1, 0x5, sid, cl.c.encoder.encode(headers)))
        cl.out["sent"] += 1
        cl.read(2)
    else:
        raise SystemExit(f"unknown mode {MODE}")
    print(json.dumps(cl.out))


main()
