"""A local HTTP server standing in for the Slack Web API, for slack-sdk's ``base_url``.

It answers ``chat.postMessage``, ``files.getUploadURLExternal``, the upload URL it hands out and
``files.completeUploadExternal``, records every request, and plays scripted failures: a list of
(status, headers) answers served before the normal one, per method, and channels that always fail.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlackStandIn:
    def __init__(self):
        self.requests: list[dict] = []
        self.script: dict[str, list[tuple[int, dict]]] = {}
        self.broken_channels: set[str] = set()
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin._handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "SlackStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def calls(self, method: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method]

    def _params(self, handler, body: bytes) -> dict:
        kind = handler.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            return json.loads(body or b"{}")
        if kind.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        return {}

    def _handle(self, handler, body: bytes) -> None:
        path = urllib.parse.urlparse(handler.path).path
        method = path.rsplit("/", 1)[-1] if path.startswith("/api/") or path.count("/") == 1 else path
        if path.startswith("/upload/"):
            method = "upload"
        params = self._params(handler, body) if method != "upload" else {}
        with self.lock:
            self.requests.append({"method": method, "params": params, "size": len(body), "auth": handler.headers.get("Authorization")})
            scripted = self.script.get(method, [])
            answer = scripted.pop(0) if scripted else None
        if answer is None and method == "chat.postMessage" and params.get("channel") in self.broken_channels:
            answer = (500, {})
        if answer is not None:
            status, headers = answer
            handler.send_response(status)
            for k, v in headers.items():
                handler.send_header(k, v)
            handler.send_header("Content-Type", "application/json")
            payload = json.dumps({"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}).encode()
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        n = len(self.requests)
        if method == "chat.postMessage":
            reply = {"ok": True, "channel": "C" + str(abs(hash(params.get("channel"))) % 10**8), "ts": f"1700000000.{n:06d}"}
        elif method == "files.getUploadURLExternal":
            reply = {"ok": True, "upload_url": f"{self.url}upload/F{n}", "file_id": f"F{n}"}
        elif method == "upload":
            handler.send_response(200)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"OK")
            return
        elif method == "files.completeUploadExternal":
            reply = {"ok": True, "files": [{"id": f["id"]} for f in json.loads(params.get("files", "[]"))]}
        else:
            reply = {"ok": False, "error": "unknown_method"}
        data = json.dumps(reply).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
