"""An HTTP/2 client (Python `h2`) that uploads a body to weir and reports,
as JSON, what became of it: the response status, whether the stream was
reset (and with which code), how much of the body went out, and how long
it all took. Used by tests/early_answer.rs: after an early answer, weir
must drain the rest of the body or reset the stream with NO_ERROR, never
leave it stuck on a flow-control window.

usage: h2_upload_client.py HOST PORT PATH BYTES [CONTENT_LENGTH [DELAY]]
CONTENT_LENGTH: the header's value (default BYTES); DELAY: seconds between
the HEADERS frame and the first DATA frame (default 0).
"""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events

host, port, path, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
declared = sys.argv[5] if len(sys.argv) > 5 else str(size)
delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0

sock = socket.create_connection((host, port), timeout=5)
conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
sid = conn.get_next_available_stream_id()
conn.send_headers(sid, [(":method", "POST"), (":path", path), (":authority", "app"), (":scheme", "http"),
                        ("content-length", declared)])
sock.sendall(conn.data_to_send())
if delay:
    time.sleep(delay)

start = time.monotonic()
sent, status, reset, body, ended = 0, None, None, b"", False
deadline = start + 20
chunk = b"x" * 16384
while time.monotonic() < deadline:
    # Send what the windows allow.
    while sent < size and reset is None:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window <= 0:
            break
        n = min(window, size - sent, len(chunk))
        conn.send_data(sid, chunk[:n], end_stream=(sent + n == size))
        sent += n
    out = conn.data_to_send()
    if out:
        try:
            sock.sendall(out)
        except OSError:
            break
    if (sent == size or reset is not None) and ended:
        break
    sock.settimeout(0.2)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        continue
    except OSError:
        break
    if not data:
        break
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            status = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, h2.events.DataReceived):
            body += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            ended = True
        elif isinstance(ev, h2.events.StreamReset):
            reset = int(ev.error_code)
            ended = True
    out = conn.data_to_send()
    if out:
        sock.sendall(out)

print(json.dumps({"status": status, "reset": reset, "sent": sent, "ended": ended,
                  "body": body.decode("latin-1"), "seconds": round(time.monotonic() - start, 3)}))
