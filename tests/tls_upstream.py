"""A real TLS HTTP/1.1 upstream for tests/upstream_tls.rs (Python's ssl,
i.e. OpenSSL; keep-alive HTTP/1.1 from http.server).

  tls_upstream.py CERT KEY [CLIENT_CA]

Prints its port, then serves on 127.0.0.1 until stdin closes. Every answer
is JSON: method, path, the body's length and sha256, the SNI the client
sent, the TLS version, whether the session was resumed, the client
certificate's subject CN (with CLIENT_CA a certificate is required), and the
number of the TCP connection (1, 2, ...). GET /bye answers, then closes
the connection (TLS close_notify, then FIN) as a server whose keep-alive
timeout ran out would, and prints "closed N" once it has. GET /healthz
answers 200, or 503 after a line "sick" on stdin (until a line "well").
"""
import hashlib
import http.server
import json
import socket
import ssl
import sys
import threading

conns = 0
sick = [False]
lock = threading.Lock()
sni = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global conns
        super().setup()
        with lock:
            conns += 1
            self.conn_no = conns

    def log_message(self, *args):
        pass

    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        s = self.connection
        peer = s.getpeercert() or {}
        cn = [v for rdn in peer.get("subject", ()) for (k, v) in rdn if k == "commonName"]
        out = json.dumps({
            "port": self.server.server_address[1],
            "method": self.command, "path": self.path, "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(), "sni": sni.get(id(s)),
            "version": s.version(), "resumed": s.session_reused,
            "client_cn": cn[0] if cn else None, "conn": self.conn_no,
        }).encode()
        self.send_response(503 if self.path == "/healthz" and sick[0] else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
        if self.path == "/bye":
            # close_notify without waiting for the peer's, then FIN.
            s.setblocking(False)
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True
            print(f"closed {self.conn_no}", flush=True)

    do_GET = answer
    do_POST = answer


def main():
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if len(sys.argv) > 3:
        ctx.load_verify_locations(sys.argv[3])
        ctx.verify_mode = ssl.CERT_REQUIRED

    def on_sni(s, name, _ctx):
        sni[id(s)] = name

    ctx.sni_callback = on_sni
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    for line in sys.stdin:
        sick[0] = line.strip() == "sick"


if __name__ == "__main__":
    main()
