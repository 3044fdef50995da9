#!/usr/bin/env python3
"""Buggy HTTP/1.1 upstream (the 'reported case' of weir's tests/crossed_answers.rs).

Answers `echo <path>` (header x-token: <path>). After the FIRST request of each
connection it waits 50 ms (without reading further requests), then sends that
same answer again, then goes on serving. Nagle is left ON (no TCP_NODELAY).
Binds 127.0.0.1 only. Writes an event log (one line per event, flushed):
  planned <path>   extra answer planned (written before the first answer)
  sent <path>      extra answer written (or its write failed, see sendfail)
  sendfail <path> <error>  the write of the extra answer failed
  raced <path>     bytes carrying <path> written while a request was already
                   waiting on the connection (HTTP/1.1's inherent race)
NODELAY=1 in the environment sets TCP_NODELAY (control run, not the case).
Usage: upstream.py PORT LOGFILE [LIFETIME_SECONDS]
"""
import os, socket, sys, threading, time

PORT, LOG = int(sys.argv[1]), sys.argv[2]
LIFETIME = float(sys.argv[3]) if len(sys.argv) > 3 else 600.0
log_lock = threading.Lock()
logf = open(LOG, "a", buffering=1)

def event(kind, path):
    with log_lock:
        logf.write(f"{kind} {path}\n")
        logf.flush()

def response(path):
    body = f"echo {path}".encode()
    return (f"HTTP/1.1 200 OK\r\nx-token: {path}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

def waiting(s, buf):
    if buf:
        return True
    # Python waits for readability first on a socket with a timeout, so the
    # peek is made with the socket switched to non-blocking for the call.
    t = s.gettimeout()
    s.setblocking(False)
    try:
        return len(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
    finally:
        s.settimeout(t)

def read_head(s, buf):
    """Return (path, rest) for the next request head, or None on close."""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    words = head.split(b"\r\n", 1)[0].split(b" ")
    return words[1].decode(), rest

def serve(s):
    s.settimeout(120)  # bounded: an idle connection is dropped after 2 min
    buf, first = b"", True
    try:
        while True:
            r = read_head(s, buf)
            if r is None:
                return
            path, buf = r
            answer = response(path)
            extra, first = first, False
            if waiting(s, buf):
                event("raced", path)
            if extra:
                event("planned", path)
            s.sendall(answer)
            if extra:
                time.sleep(0.050)
                if waiting(s, buf):
                    event("raced", path)
                try:
                    s.sendall(answer)
                    event("sent", path)
                except OSError as e:
                    # Counted as done either way, so a round never waits on it.
                    event("sent", path)
                    event("sendfail", f"{path} {e!r}")
                    raise
    except OSError as e:
        print("conn error:", repr(e), file=sys.stderr, flush=True)
    finally:
        s.close()

def main():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", PORT))
    ls.listen(128)
    ls.settimeout(1.0)
    end = time.monotonic() + LIFETIME
    while time.monotonic() < end:
        try:
            s, _ = ls.accept()
        except socket.timeout:
            continue
        # Nagle stays ON: no TCP_NODELAY (checked below, default is off),
        # unless NODELAY=1 is set (control run only).
        if os.environ.get("NODELAY") == "1":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        threading.Thread(target=serve, args=(s,), daemon=True).start()

main()
