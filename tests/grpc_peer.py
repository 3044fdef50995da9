"""A real gRPC server and client (grpcio) for tests/grpc.rs.

No generated code: a generic handler for the service `weir.test.Game` with
raw bytes as messages.

  grpc_peer.py server [EVERY:CODE]    serve on 127.0.0.1:0, print the port, run until stdin closes;
                                      with EVERY:CODE, every EVERY-th Bet call fails with CODE.
                                      It also serves the standard health service
                                      (grpcio-health-checking), "" and weir.test.Game SERVING; a
                                      line "NOT_SERVING" or "SERVING" on stdin sets weir.test.Game's
                                      status, a line "calls" prints the Bet calls served so far
  grpc_peer.py server-tls CERT KEY [CLIENT_CA]
                                      the same over TLS (ALPN h2); with CLIENT_CA, a client
                                      certificate it signed is required
  grpc_peer.py load ADDR SECONDS THREADS
                                      Bet calls through ADDR for SECONDS from THREADS threads, each
                                      with a random x-player-id; prints {"calls": N, "codes": {...}}
  grpc_peer.py call ADDR METHOD BODY [TIMEOUT_S]
                                      one call through ADDR (h2c), print a JSON line:
                                      {"code": "OK", "details": ..., "replies": [...], "trailers": {...}}

Methods:
  Chat    bidirectional: each message answered with "echo:" + it; the client
          sends the next only after the answer to the last came back
  Bet     unary: answers the request bytes; a request "fail:CODE[:message]"
          is answered with that status code instead; "sleep:MS" waits first.
  Stream  server streaming: "N" answers N messages "m0".."m{N-1}"; "N:CODE"
          ends the stream with CODE after them.
"""
import json
import sys
import time
from concurrent import futures

import grpc


def code_of(name):
    return getattr(grpc.StatusCode, name)


FAIL = {"every": 0, "code": None, "n": 0}
LOCK = __import__("threading").Lock()


CALLS = [0]


def bet(request, context):
    text = request.decode()
    with LOCK:
        CALLS[0] += 1
    if FAIL["every"]:
        with LOCK:
            FAIL["n"] += 1
            nth = FAIL["n"]
        if nth % FAIL["every"] == 0:
            context.abort(code_of(FAIL["code"]), "every %d-th call fails" % FAIL["every"])
    if text.startswith("sleep:"):
        time.sleep(int(text.split(":")[1]) / 1000)
    if text.startswith("fail:"):
        parts = text.split(":", 2)
        context.abort(code_of(parts[1]), parts[2] if len(parts) > 2 else "failed on purpose")
    return request


def stream(request, context):
    text = request.decode()
    n, _, code = text.partition(":")
    for i in range(int(n)):
        yield f"m{i}".encode()
    if code:
        context.abort(code_of(code), "stream failed on purpose")


def chat(requests, context):
    # Bidirectional: every message answered at once, as it comes.
    for m in requests:
        yield b"echo:" + m


def serve(tls=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        "weir.test.Game",
        {
            "Bet": grpc.unary_unary_rpc_method_handler(bet),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    checks.set("weir.test.Game", health_pb2.HealthCheckResponse.SERVING)
    if tls:
        cert, key, client_ca = tls
        read = lambda p: open(p, "rb").read()
        creds = grpc.ssl_server_credentials(
            [(read(key), read(cert))],
            root_certificates=read(client_ca) if client_ca else None,
            require_client_auth=bool(client_ca),
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    for line in sys.stdin:  # until the test closes our stdin (or dies)
        word = line.strip()
        if word in ("SERVING", "NOT_SERVING"):
            checks.set("weir.test.Game", getattr(health_pb2.HealthCheckResponse, word))
            print("set", word, flush=True)
        elif word == "calls":
            with LOCK:
                print(CALLS[0], flush=True)
    server.stop(0)


def call(addr, method, body, timeout):
    import os

    # METADATA="k=v,k2=v2": sent with the call (stickiness, segments).
    md = [tuple(kv.split("=", 1)) for kv in os.environ.get("METADATA", "").split(",") if "=" in kv]
    channel = grpc.insecure_channel(addr)
    path = f"/weir.test.Game/{method}"
    out = {"code": "OK", "details": None, "replies": [], "trailers": {}}
    try:
        if method == "Chat":
            # Send a message only after the answer to the previous one came
            # back: proves both directions stream through weir at once.
            import queue

            q = queue.Queue()
            words = body.split(",")
            q.put(words[0].encode())

            def gen():
                while True:
                    m = q.get()
                    if m is None:
                        return
                    yield m

            it = channel.stream_stream(path)(gen(), timeout=timeout, metadata=md)
            for i, m in enumerate(it):
                out["replies"].append(m.decode())
                q.put(words[i + 1].encode() if i + 1 < len(words) else None)
        elif method == "Stream":
            rpc = channel.unary_stream(path)
            it = rpc(body.encode(), timeout=timeout, metadata=md)
            for m in it:
                out["replies"].append(m.decode())
            out["trailers"] = {k: v for k, v in (it.trailing_metadata() or [])}
        else:
            rpc = channel.unary_unary(path)
            reply, c = rpc.with_call(body.encode(), timeout=timeout, metadata=md)
            out["replies"].append(reply.decode())
            out["trailers"] = {k: v for k, v in (c.trailing_metadata() or [])}
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
    print(json.dumps(out), flush=True)


def load(addr, seconds, threads):
    import random
    import threading

    codes = {}
    calls = [0]
    lock = threading.Lock()
    deadline = time.time() + seconds

    def run():
        channel = grpc.insecure_channel(addr)
        rpc = channel.unary_unary("/weir.test.Game/Bet")
        while time.time() < deadline:
            player = "p%d" % random.randrange(1_000_000)
            try:
                rpc(b"ok", timeout=5, metadata=(("x-player-id", player),))
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            with lock:
                calls[0] += 1
                codes[code] = codes.get(code, 0) + 1

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"calls": calls[0], "codes": codes}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        if len(sys.argv) > 2:
            every, code = sys.argv[2].split(":")
            FAIL["every"], FAIL["code"] = int(every), code
        serve()
    elif sys.argv[1] == "server-tls":
        serve((sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
    elif sys.argv[1] == "load":
        load(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]) if len(sys.argv) > 5 else 10.0)
