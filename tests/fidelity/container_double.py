"""A minimal model container for the sagemaker-local fidelity tests (``python -m
tests.fidelity.container_double --port N``): the multi-model API MMS offers (``/ping``, ``/models``,
``/models/{name}/invoke``) and the single-model ``/invocations``. A JSON body ``{"fail": true}`` answers
500; ``{"sleep": S}`` waits S seconds first; anything else is echoed. It stands in for the real container
only where the test is about the gateway (the real container is exercised in tests/container)."""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/ping":
            self._send(200, {"status": "Healthy"})
        elif self.path.startswith("/models/") and self.path.split("/")[2] in LOADED:
            self._send(200, [{"modelName": self.path.split("/")[2]}])  # type: ignore[arg-type]
        else:
            self._send(404, {"code": 404, "type": "ModelNotFoundException", "message": "not loaded"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/models":
            LOADED.add(json.loads(body)["model_name"])
            self._send(200, {"status": "loaded"})
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        if isinstance(request, dict) and request.get("sleep"):
            time.sleep(float(request["sleep"]))
        if isinstance(request, dict) and request.get("fail"):
            self._send(500, {"error": "the model rejected this input (container double)"})
            return
        self._send(200, {"echo": request})

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
