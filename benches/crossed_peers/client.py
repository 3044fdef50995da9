#!/usr/bin/env python3
"""A/B client scenario (weir tests/crossed_answers.rs, reported case), raw sockets.

Per round: client A sends GET /A<r>-first then GET /A<r>-second on one
keep-alive connection; client B (its own connection) sends GET /B<r> DELAY ms
after A's second answer. Then wait until the upstream has written the extra
answer it planned (bounded), close both. Only 127.0.0.1. Every socket op has a
timeout. Prints one JSON line per round and a summary.
With BWARM=1 in the environment, B first sends GET /B<r>-warm on its
connection (before A starts, then waits for the upstream's extra answer), so
its checked request is its session's second.
Usage: client.py PROXY_PORT UPSTREAM_LOG DELAY_MS ROUNDS
"""
import json, os, socket, sys, time

PORT, LOG, DELAY, ROUNDS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
TIMEOUT = 5.0
WARM = os.environ.get("BWARM") == "1"

class Client:
    def __init__(self):
        self.s, self.conns = None, 0

    def _alive(self):
        if self.s is None:
            return False
        self.s.setblocking(False)
        try:
            return self.s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.s.settimeout(TIMEOUT)

    def send(self, path):
        """Returns (status, x-token, body, reconnected) or ('ERR:...', ...)."""
        reconnected = False
        if not self._alive():
            if self.s:
                self.s.close()
            self.s = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT)
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns += 1
            reconnected = self.conns > 1
        try:
            self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: app\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                c = self.s.recv(65536)
                if not c:
                    return ("ERR:closed", "", "", reconnected)
                buf += c
            head, body = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin1").split("\r\n")
            status = lines[0].split(" ")[1]
            hdrs = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length", "0"))
            while len(body) < n:
                c = self.s.recv(65536)
                if not c:
                    break
                body += c
            return (status, hdrs.get("x-token", ""), body[:n].decode("latin1"), reconnected)
        except socket.timeout:
            return ("ERR:timeout", "", "", reconnected)
        except OSError as e:
            return (f"ERR:{e.__class__.__name__}", "", "", reconnected)

    def close(self):
        if self.s:
            self.s.close()
            self.s = None

def events():
    try:
        with open(LOG) as f:
            return [l.split(" ", 1) for l in f.read().splitlines() if " " in l]
    except FileNotFoundError:
        return []

def settle():
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ev = events()
        if sum(k == "planned" for k, _ in ev) == sum(k == "sent" for k, _ in ev):
            return True
        time.sleep(0.001)
    return False

summary = {"rounds": ROUNDS, "delay_ms": DELAY, "b_crossed": 0, "b_crossed_raced": 0,
           "b_crossed_not_raced": 0, "b_got_A_this_round": 0, "b_non200_or_error": 0,
           "a_first_not_own": 0, "a_second_got_a_first": 0, "a_second_other": 0, "unsettled": 0, "b_warm": WARM, "b_warm_not_own": 0}
for r in range(ROUNDS):
    a, b = Client(), Client()
    if WARM:
        # B's session has already sent one request (own connection), so the
        # checked request is not its first (matters for HAProxy 'safe').
        bw = b.send(f"/B{r}-warm")
        if bw[1] != f"/B{r}-warm":
            summary["b_warm_not_own"] += 1
        if not settle():
            summary["unsettled"] += 1
    a1 = a.send(f"/A{r}-first")
    a2 = a.send(f"/A{r}-second")
    time.sleep(DELAY / 1000)
    bb = b.send(f"/B{r}")
    if not settle():
        summary["unsettled"] += 1
    raced = {p for k, p in events() if k == "raced"}
    own_b = f"/B{r}"
    rec = {"round": r, "A1": a1[:3], "A2": a2[:3], "B": bb[:3], "B_reconnected": bb[3]}
    if a1[1] != f"/A{r}-first":
        summary["a_first_not_own"] += 1
    if a2[1] == f"/A{r}-first":
        summary["a_second_got_a_first"] += 1
    elif a2[1] != f"/A{r}-second":
        summary["a_second_other"] += 1
    if bb[0] != "200":
        summary["b_non200_or_error"] += 1
    # B crossed: it received a body that is not the echo of its own path.
    if bb[0] == "200" and bb[2] != f"echo {own_b}":
        summary["b_crossed"] += 1
        rec["crossed"] = True
        if bb[1] in raced:
            summary["b_crossed_raced"] += 1
            rec["raced"] = True
        else:
            summary["b_crossed_not_raced"] += 1
        if bb[1].startswith(f"/A{r}-"):
            summary["b_got_A_this_round"] += 1
    print(json.dumps(rec), flush=True)
    a.close()
    b.close()
print("SUMMARY " + json.dumps(summary), flush=True)
