"""WebSocket over HTTP/2 (RFC 8441) client for tests/websocket_h2.rs.

Uses the `h2` library (installed by .ci/run) over plain TCP (h2c prior
knowledge), or over TLS with ALPN h2 when WS_H2_CA names the CA file to
trust (WS_H2_SNI: the server name to ask for). Prints one JSON object with
what it saw.

  ws_h2_client.py echo HOST:PORT PATH PLAYER   # open, echo, close 1000
  ws_h2_client.py hold HOST:PORT PATH PLAYER   # open, echo, wait for a close
  ws_h2_client.py connect HOST:PORT            # plain CONNECT (no :protocol)
"""

import json
import os
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

DEADLINE = time.monotonic() + 20


def frame(opcode, payload, fin=True):
    """A masked client frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def parse(buf):
    """Whole unmasked frames at the front of buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        out.append((op, bytes(buf[at : at + n])))
        buf = buf[at + n :]
    return out, buf


class Client:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.scheme = "http"
        ca = os.environ.get("WS_H2_CA")
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.set_alpn_protocols(["h2"])
            name = os.environ.get("WS_H2_SNI", host)
            self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
            if self.sock.selected_alpn_protocol() != "h2":
                raise RuntimeError(f"ALPN chose {self.sock.selected_alpn_protocol()!r}, not h2")
            self.scheme = "https"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.events = []
        self.remote_settings = {}
        self.authority = addr

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """Read once and return the new events."""
        self.sock.settimeout(max(0.1, DEADLINE - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        events = self.conn.receive_data(data)
        for e in events:
            if isinstance(e, h2.events.RemoteSettingsChanged):
                for k, v in e.changed_settings.items():
                    self.remote_settings[int(k)] = v.new_value
            if isinstance(e, h2.events.DataReceived):
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        self.flush()
        return events

    def wait_settings(self):
        while 8 not in self.remote_settings and time.monotonic() < DEADLINE:
            self.pump()
        return self.remote_settings.get(8, 0)

    def send(self, sid, data):
        """DATA frames no larger than the peer allows (flow control: the
        test's messages stay well under the initial 64 KiB window)."""
        step = self.conn.max_outbound_frame_size
        for i in range(0, len(data), step):
            self.conn.send_data(sid, data[i : i + step])
        self.flush()

    def request(self, headers):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers)
        self.flush()
        while time.monotonic() < DEADLINE:
            for e in self.pump():
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    return sid, {k.decode(): v.decode() for k, v in e.headers}
                if isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    return sid, {":reset": str(e.error_code)}
        raise TimeoutError("no response")


def websocket(mode, addr, path, player):
    c = Client(addr)
    out = {"enable_connect_protocol": c.wait_settings()}
    sid, resp = c.request(
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", c.scheme),
            (":path", path),
            (":authority", c.authority),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "game.v1"),
            ("x-player-id", player),
        ]
    )
    out["status"] = resp.get(":status")
    out["headers"] = resp
    if out["status"] != "200":
        print(json.dumps(out))
        return
    buf = b""
    got = []
    ended = False

    def read_frames(want):
        nonlocal buf, ended
        while len(got) < want and time.monotonic() < DEADLINE and not ended:
            try:
                events = c.pump()
            except (EOFError, socket.timeout):
                break
            for e in events:
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    buf += e.data
                if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid:
                    ended = True
            frames, buf = parse(buf)
            got.extend(frames)

    text = "hello over h2 ".encode() * 50
    blob = bytes((i * 7919) % 251 for i in range(30000))
    c.send(sid, frame(0x1, text))
    c.send(sid, frame(0x2, blob))
    # One text message in two frames: the upstream reassembles it.
    c.send(sid, frame(0x1, b"one|", fin=False) + frame(0x0, b"two"))
    c.flush()
    read_frames(3)
    out["echo_text"] = len(got) > 0 and got[0] == (0x1, text)
    out["echo_binary"] = len(got) > 1 and got[1] == (0x2, blob)
    out["echo_fragmented"] = len(got) > 2 and got[2] == (0x1, b"one|two")
    if mode == "hold":
        print(json.dumps(dict(out, phase="open")), flush=True)
        read_frames(4)
    else:
        c.send(sid, frame(0x8, struct.pack("!H", 1000) + b"bye"))
        c.flush()
        read_frames(4)
    closes = [p for op, p in got[3:] if op == 0x8]
    out["close_code"] = struct.unpack("!H", closes[0][:2])[0] if closes and len(closes[0]) >= 2 else None
    if mode == "hold" and closes:
        # Answer weir's close, as a client should.
        c.send(sid, frame(0x8, closes[0][:2]))
        c.flush()
    if not ended:
        read_frames(99)
    out["stream_ended"] = ended
    print(json.dumps(out))


def plain_connect(addr):
    c = Client(addr)
    c.wait_settings()
    _, resp = c.request([(":method", "CONNECT"), (":authority", "example.com:443")])
    print(json.dumps({"status": resp.get(":status"), "headers": resp}))


if __name__ == "__main__":
    if sys.argv[1] == "connect":
        plain_connect(sys.argv[2])
    else:
        websocket(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
