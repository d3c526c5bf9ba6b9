#!/usr/bin/env python3
# qmp.py SOCKET CMD [CMD]...: run QMP commands in order, each CMD a JSON object
# {"execute": ..., "arguments": ...}; a CMD prefixed with "?" may fail.  Prints each return
# as JSON on a line; exit 1 naming the command at the first unexpected error.
import json
import socket
import sys

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for raw in ['{"execute": "qmp_capabilities"}'] + sys.argv[2:]:
    optional = raw.startswith("?")
    cmd = json.loads(raw.lstrip("?"))
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" in r:
            continue
        break
    if "error" in r and not optional:
        sys.exit("qmp.py: %s: %s" % (cmd["execute"], r["error"]["desc"]))
    if cmd["execute"] != "qmp_capabilities":
        print(json.dumps(r.get("return")))
