"""Hold N idle client connections to a proxy, each after one request.

  python3 benches/idle.py PORT N h1|h2

Opens N connections to 127.0.0.1:PORT, BATCH at a time; on each sends one
GET (HTTP/1.1 keep-alive, or h2c with prior knowledge via the `h2` package)
and reads the whole answer. Prints "READY <ok> <failed>" once every
connection has had its answer, then holds them all open until stdin closes.
Loopback only; every connection bounded by a 30 s timeout.
"""
import asyncio
import sys

BATCH = 100


async def h1(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: bench.example\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await r.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:40])
    return w


async def h2c(port):
    import h2.connection
    import h2.config
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                            (":authority", "bench.example")], end_stream=True)
    w.write(conn.data_to_send())
    status = None
    while True:
        data = await r.read(65536)
        if not data:
            raise RuntimeError("closed")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded):
                w.write(conn.data_to_send())
                if status != b"200":
                    raise RuntimeError(status)
                # The reader is kept so the connection is not half-closed.
                return (w, r)
        w.write(conn.data_to_send())


async def main():
    port, n, proto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    one = h1 if proto == "h1" else h2c
    held, failed = [], 0
    for start in range(0, n, BATCH):
        batch = [asyncio.wait_for(one(port), 30) for _ in range(min(BATCH, n - start))]
        for res in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(res, BaseException):
                failed += 1
            else:
                held.append(res)
    print(f"READY {len(held)} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
