"""An independent TLS client (Python's ssl, i.e. OpenSSL, and the websockets library) against
wsrelay over wss:// and https://: GET /healthz, then two clients in one room, one says
something, both must see it. Usage: chat.py PORT CA_FILE. Exits 0 and prints "ok" on success.
"""

import json
import ssl
import sys
import urllib.request

from websockets.sync.client import connect

TIMEOUT = 5


def next_message(ws):
    """The next live chat message: welcome, history and notices are skipped (bounded)."""
    for _ in range(50):
        m = json.loads(ws.recv(timeout=TIMEOUT))
        if m.get("type") == "message" and not m.get("history"):
            return m
    raise SystemExit("no chat message within 50 frames")


def main():
    port, cafile = sys.argv[1], sys.argv[2]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=ctx, timeout=TIMEOUT) as r:
        assert r.status == 200, r.status
    url = f"wss://localhost:{port}/pytls"
    with connect(url, ssl=ctx, open_timeout=TIMEOUT) as a, connect(url, ssl=ctx, open_timeout=TIMEOUT) as b:
        assert a.socket.version() in ("TLSv1.2", "TLSv1.3"), a.socket.version()
        a.send(json.dumps({"name": "py", "msg": "hello over tls"}))
        for ws in (a, b):
            m = next_message(ws)
            assert m["msg"] == "hello over tls" and m["name"] == "py", m
    print("ok", flush=True)


if __name__ == "__main__":
    main()
