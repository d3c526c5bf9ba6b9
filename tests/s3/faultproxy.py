#!/usr/bin/env python3
"""faultproxy.py: an HTTP proxy in front of radosgw that injects faults (tests/s3).

    faultproxy.py UPSTREAM_PORT PORTFILE MODE
MODE: "slowdown:N"  every Nth request answered 503 SlowDown (the others forwarded)
      "readonly"    PUT, POST and DELETE answered 403 AccessDenied (a bucket refusing writes)
Requests are forwarded unchanged (Host header too, so SigV4 signatures stay valid).  The
listening port is written to PORTFILE; counts of injected faults go to PORTFILE.count.
"""
import http.client
import http.server
import socketserver
import sys
import threading

upstream = int(sys.argv[1])
portfile = sys.argv[2]
mode = sys.argv[3]
lock = threading.Lock()
state = {"n": 0, "faults": 0}


def fault_for(method):
    with lock:
        state["n"] += 1
        n = state["n"]
        if mode.startswith("slowdown:") and n % int(mode.split(":")[1]) == 0:
            state["faults"] += 1
            return 503, "SlowDown"
        if mode == "readonly" and method in ("PUT", "POST", "DELETE"):
            state["faults"] += 1
            return 403, "AccessDenied"
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        f = fault_for(self.command)
        if f:
            msg = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                   "<Message>injected</Message></Error>" % f[1]).encode()
            self.send_response(f[0])
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(msg)
            with open(portfile + ".count", "w") as c:
                c.write("%d\n" % state["faults"])
            return
        conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
with open(portfile + ".count", "w") as c:
    c.write("0\n")
with open(portfile, "w") as p:
    p.write("%d\n" % srv.server_address[1])
srv.serve_forever()
