#!/usr/bin/env python3
"""Orchestrates the experiment: for each proxy setup and each B delay, a fresh
upstream + proxy on free 127.0.0.1 ports, 30 rounds of client.py, then every
started process is stopped by its pid. Output under $OUT (default
/tmp/crossed-peers/runs/). Run from anywhere: the scripts are found next to
this file. Loopback only.
Usage: run.py ROUNDS MODE [setups...]
  MODE continuous: one upstream + proxy per (setup, delay), ROUNDS rounds on it
  MODE isolated:   a fresh upstream + proxy for every round (no state carried
                   from one round to the next)
  setups: nginx haproxy-always haproxy-safe weir (default: the first three;
          weir: WEIR_BIN, default target/release/weir)
  BWARM=1 in the environment: B sends a warm-up request first (client.py)
  NODELAY=1 in the environment: the upstream sets TCP_NODELAY (control)
"""
import json, os, signal, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "/tmp/crossed-peers")
ROUNDS = int(sys.argv[1])
MODE = sys.argv[2]
assert MODE in ("continuous", "isolated")
SETUPS = sys.argv[3:] or ["nginx", "haproxy-always", "haproxy-safe"]
TAG = MODE + ("-bwarm" if os.environ.get("BWARM") == "1" else "") + ("-nodelay" if os.environ.get("NODELAY") == "1" else "")
DELAYS = [0, 5, 15]

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def wait_listen(port, secs=10):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False

NGINX = """worker_processes 1;
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {d}/nginx-access.log;
  client_body_temp_path {d}/tmp_body; proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi; uwsgi_temp_path {d}/tmp_uwsgi; scgi_temp_path {d}/tmp_scgi;
  upstream app {{ server 127.0.0.1:{up}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

HAPROXY = """global
  nbthread 1
  log stdout format raw local0 info
defaults
  mode http
  log global
  option httplog
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse {reuse}
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{up}
"""

WEIR = """listen: [{{address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin}"}}
state_dir: {d}/state
upstreams:
  app: {{endpoints: ["127.0.0.1:{up}"]}}
routes:
  - name: app
    stable: {{upstream: app}}
"""

def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

def one(setup, delay, d, rounds):
    subprocess.run(["rm", "-rf", d])
    os.makedirs(d)
    up, port = free_port(), free_port()
    procs = []
    try:
        upl = f"{d}/upstream.log"
        procs.append(subprocess.Popen([sys.executable, f"{HERE}/upstream.py", str(up), upl, "300"],
                                      stdout=open(f"{d}/upstream.out", "w"), stderr=subprocess.STDOUT))
        # (wait_listen's probe connections show up as a request-less upstream
        # connection and, in HAProxy's log, as one <BADREQ> line: harmless)
        assert wait_listen(up), "upstream did not listen"
        if setup == "weir":
            open(f"{d}/weir.yaml", "w").write(WEIR.format(d=d, up=up, port=port, admin=free_port()))
            cmd = [os.environ.get("WEIR_BIN", "target/release/weir"), "run", "-c", f"{d}/weir.yaml"]
        elif setup == "nginx":
            open(f"{d}/nginx.conf", "w").write(NGINX.format(d=d, up=up, port=port))
            cmd = ["/usr/sbin/nginx", "-p", d, "-c", f"{d}/nginx.conf"]
        else:
            reuse = setup.split("-", 1)[1]
            open(f"{d}/haproxy.cfg", "w").write(HAPROXY.format(up=up, port=port, reuse=reuse))
            cmd = ["/usr/sbin/haproxy", "-db", "-f", f"{d}/haproxy.cfg"]
        procs.append(subprocess.Popen(cmd, stdout=open(f"{d}/proxy.out", "w"), stderr=subprocess.STDOUT))
        assert wait_listen(port), f"{setup} did not listen"
        time.sleep(0.2)
        c = subprocess.run([sys.executable, f"{HERE}/client.py", str(port), upl, str(delay), str(rounds)],
                           capture_output=True, text=True, timeout=60 + rounds * 25)
        open(f"{d}/client.out", "w").write(c.stdout + c.stderr)
        line = [l for l in c.stdout.splitlines() if l.startswith("SUMMARY ")]
        return json.loads(line[0][8:]) if line else {"error": c.stderr[-500:]}
    finally:
        for p in reversed(procs):
            stop(p)

os.makedirs(f"{OUT}/runs", exist_ok=True)
for setup in SETUPS:
    for delay in DELAYS:
        if MODE == "continuous":
            res = one(setup, delay, f"{OUT}/runs/{TAG}/{setup}-d{delay}", ROUNDS)
        else:
            res = None
            for r in range(ROUNDS):
                s = one(setup, delay, f"{OUT}/runs/{TAG}/{setup}-d{delay}/r{r}", 1)
                if res is None:
                    res = s
                else:
                    for k, v in s.items():
                        if isinstance(v, int) and not isinstance(v, bool) and k != "delay_ms":
                            res[k] += v
        print(TAG, setup, delay, json.dumps(res), flush=True)
