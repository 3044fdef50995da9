#!/usr/bin/env python3
"""Differential run (hardening.md A): the same HTTP/1 framing vectors sent to
weir, nginx and HAProxy on loopback, each in front of the same recording
upstream. Writes docs/differential.md: per vector and proxy, the status on
the wire, whether the client connection was closed, and how many requests
reached the upstream (and whether a smuggled one did).

    python3 benches/differential.py [path to weir binary]

Needs nginx and haproxy installed (Debian packages). Loopback only; every
read is bounded.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/weir")

SMUGGLE = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
VECTORS = [
    ("valid chunked POST", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("CL + TE (CL.TE smuggle)", f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {5 + len(SMUGGLE)}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLE}"),
    ("TE + CL (TE.CL smuggle)", f"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{len(SMUGGLE):x}\r\n{SMUGGLE}\r\n0\r\n\r\n"),
    ("two different CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("CL: 3, 3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ("CL: +3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"),
    ("CL: 0x3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc"),
    ("space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"),
    ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"),
    ("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
    ("TE: chunked, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("TE: gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("two TE headers", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE: xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("no Host (1.1)", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("Connection-named header", "GET / HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n"),
    ("9 KiB request target", f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Recorder:
    """Upstream: records what arrives, answers every request head 200."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.requests = []
        self.heads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        """A small HTTP/1.1 server parser: heads, then bodies by
        Transfer-Encoding: chunked or Content-Length, so a body that merely
        contains a request is not mistaken for one."""
        c.settimeout(5)
        buf = b""

        def fill():
            nonlocal buf
            d = c.recv(65536)
            if not d:
                raise OSError("eof")
            buf += d

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    fill()
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                fields = {}
                for l in lines[1:]:
                    k, _, v = l.partition(b":")
                    fields.setdefault(k.strip().lower(), []).append(v.strip())
                with self.lock:
                    self.requests.append(lines[0].decode("latin-1"))
                    self.heads.append(head)
                if b"chunked" in b",".join(fields.get(b"transfer-encoding", [])).lower():
                    while True:
                        while b"\r\n" not in buf:
                            fill()
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        while len(buf) < size + 2:
                            fill()
                        buf = buf[size + 2 :]
                        if size == 0:
                            break
                elif fields.get(b"content-length"):
                    n = int(fields[b"content-length"][0])
                    while len(buf) < n:
                        fill()
                    buf = buf[n:]
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ValueError):
            return

    def take(self):
        with self.lock:
            r, h = self.requests, self.heads
            self.requests, self.heads = [], []
        return r, h


def send(port, payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(payload.encode("latin-1"))
    out, closed = b"", False
    s.settimeout(1.5)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    except OSError:
        closed = True
    s.close()
    first = out.split(b"\r\n", 1)[0].decode("latin-1")
    status = first.split(" ")[1] if first.startswith("HTTP/") and len(first.split(" ")) > 1 else "none"
    return status, closed


def main():
    for tool in ("nginx", "haproxy"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool}")
    up = Recorder()
    work = tempfile.mkdtemp(prefix="weir-diff-")
    procs = []
    ports = {"weir": free_port(), "nginx": free_port(), "haproxy": free_port()}
    with open(f"{work}/weir.yaml", "w") as f:
        f.write(
            f'listen: [{{address: "127.0.0.1:{ports["weir"]}"}}]\nadmin: {{address: "127.0.0.1:{free_port()}"}}\n'
            f"access_log: false\nstate_dir: {work}/state\n"
            f'upstreams:\n  v1: {{endpoints: ["127.0.0.1:{up.port}"]}}\nroutes:\n  - name: app\n    stable: {{upstream: v1}}\n'
        )
    os.makedirs(f"{work}/nginx", exist_ok=True)
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(
            f"daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err warn;\n"
            "events { worker_connections 256; }\n"
            f"http {{ access_log off; client_body_temp_path {work}/nginx; proxy_temp_path {work}/nginx;\n"
            f"  fastcgi_temp_path {work}/nginx; uwsgi_temp_path {work}/nginx; scgi_temp_path {work}/nginx;\n"
            f"  server {{ listen 127.0.0.1:{ports['nginx']}; location / {{ proxy_pass http://127.0.0.1:{up.port};\n"
            '    proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
        )
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n"
            f"frontend f\n  bind 127.0.0.1:{ports['haproxy']}\n  default_backend b\n"
            f"backend b\n  server s1 127.0.0.1:{up.port}\n"
        )
    try:
        procs.append(subprocess.Popen([WEIR, "run", "-c", f"{work}/weir.yaml"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf"], stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", f"{work}/haproxy.cfg"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        deadline = time.time() + 10
        for name, port in ports.items():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        sys.exit(f"{name} did not start")
                    time.sleep(0.1)
        rows = []
        for name, payload in VECTORS:
            cells = []
            for proxy in ("weir", "nginx", "haproxy"):
                up.take()
                status, closed = send(ports[proxy], payload)
                time.sleep(0.2)
                reqs, heads = up.take()
                n = len(reqs)
                smuggled = any("/smuggled" in r for r in reqs)
                secret = any(b"x-secret" in h.lower() for h in heads)
                cell = f"{status}{' closed' if closed else ''}, up {n}"
                if smuggled:
                    cell += " **SMUGGLED**"
                if secret:
                    cell += " (x-secret forwarded)"
                cells.append(cell)
            rows.append((name, cells))
            print(f"{name:<28} " + " | ".join(cells))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    haproxy_v = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    with open(os.path.join(ROOT, "docs/differential.md"), "w") as f:
        f.write("# Differential run: HTTP/1 framing vectors\n\n")
        f.write(
            "Generated by `python3 benches/differential.py` (do not edit by hand). Each proxy sits in front of the\n"
            "same recording upstream on loopback. A cell reads: status on the wire (`none` = no answer), `closed` if\n"
            "the proxy closed the client connection within 1.5 s, and `up N` = request lines that reached the\n"
            "upstream. **SMUGGLED** marks a hidden second request reaching the upstream.\n\n"
        )
        f.write(f"Versions: weir {subprocess.run([WEIR, 'version'], capture_output=True, text=True).stdout.strip()}, {nginx_v}, {haproxy_v}.\n\n")
        f.write("| vector | weir | nginx | HAProxy |\n|---|---|---|---|\n")
        for name, cells in rows:
            f.write(f"| {name} | " + " | ".join(cells) + " |\n")


main()
