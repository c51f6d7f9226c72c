"""A local stand-in for the GCS JSON API (list, metadata, media download) on loopback.

google-cloud-storage talks to it through ``client_options={"api_endpoint": ...}``, so the real
client library's requests and response parsing are exercised without the internet.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def _meta(bucket: str, name: str, data: bytes) -> dict:
    return {
        "kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)),
        "generation": str(int(hashlib.sha256(data).hexdigest()[:12], 16)), "metageneration": "1",
        "updated": "2026-10-01T00:00:00.000Z", "timeCreated": "2026-10-01T00:00:00.000Z", "contentType": "application/octet-stream",
        "md5Hash": "", "id": f"{bucket}/{name}",
    }


@contextmanager
def gcs_standin(objects: dict[str, bytes], bucket: str = "billing-bucket"):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == f"/storage/v1/b/{bucket}/o":
                prefix = query.get("prefix", [""])[0]
                items = [_meta(bucket, k, v) for k, v in sorted(objects.items()) if k.startswith(prefix)]
                return self._send(200, json.dumps({"kind": "storage#objects", "items": items}).encode())
            if "/o/" in url.path:
                name = unquote(url.path.split("/o/", 1)[1])
                if name not in objects:
                    return self._send(404, json.dumps({"error": {"code": 404, "message": "No such object"}}).encode())
                if query.get("alt") == ["media"]:
                    return self._send(200, objects[name], "application/octet-stream")
                return self._send(200, json.dumps(_meta(bucket, name, objects[name])).encode())
            return self._send(404, b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    finally:
        server.shutdown()
        server.server_close()
