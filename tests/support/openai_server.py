"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the live GPT-4o tests.

The real ``openai`` client talks to it through ``OPENAI_BASE_URL``. The server answers /v1/chat/completions
according to a script of actions (answer, 429, 500, hang, 401, malformed body) and logs every request, so the
tests can count what was asked.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from pnp_ovss.labels.openai_live import LiveSettings
from pnp_ovss.vocab import load_vocabulary

SECRET_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


# --- the fake server -----------------------------------------------------------------------------


class FakeOpenAIServer:
    """OpenAI-compatible chat completions on a random local port.

    ``answers`` maps the base64 image payload to the answer text; ``actions`` is a FIFO of what to
    do for the next requests (default when empty: answer).
    """

    def __init__(self):
        self.answers: dict[str, str] = {}
        self.actions: list[str] = []
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    action = server.actions.pop(0) if server.actions else "answer"
                    server.requests.append(
                        {
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                            "body": body,
                            "action": action,
                        }
                    )
                server.respond(self, action, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def image_payloads(self) -> list[str]:
        return [image_payload(r["body"]) for r in self.requests if r["action"] == "answer"]

    @staticmethod
    def send_json(handler, status, obj, headers=()):
        data = json.dumps(obj).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def respond(self, handler, action, body):
        error = lambda msg, typ: {"error": {"message": msg, "type": typ, "code": None}}  # noqa: E731
        fast_retry = [("retry-after-ms", "5")]
        if action == "429":
            return self.send_json(handler, 429, error("Rate limit reached", "rate_limit_exceeded"), fast_retry)
        if action == "500":
            return self.send_json(handler, 500, error("The server had an error", "server_error"), fast_retry)
        if action == "401":
            return self.send_json(handler, 401, error("Incorrect API key provided: sk-tes***cdef", "invalid_request_error"))
        if action == "403":
            return self.send_json(handler, 403, error("Project does not have access", "invalid_request_error"))
        if action == "hang":
            self.release.wait(5)
            return
        if action == "malformed":
            data = b"<html>bad gateway</html>"
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if action == "not_a_completion":
            return self.send_json(handler, 200, {"object": "chat.completion", "id": "x"})
        text = self.answers.get(image_payload(body), "[1: 'aeroplane'], [100%]")
        self.send_json(
            handler,
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "gpt-4o"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            },
        )


def image_payload(body: dict) -> str:
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    return url.split("base64,", 1)[1]


def image_mime(body: dict) -> str:
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    return url.split(";", 1)[0].removeprefix("data:")


class FakeDataset:
    """The parts of the Dataset interface the labels stage uses."""

    has_ground_truth = False

    def __init__(self, name, root: Path, ids, fmt="PNG"):
        self.name = name
        self.vocabulary = load_vocabulary(name)
        self.root = root
        self._ids = list(ids)
        root.mkdir(parents=True, exist_ok=True)
        for k, image_id in enumerate(self._ids):
            rgb = np.full((8, 8, 3), (10 * k) % 255, dtype=np.uint8)
            Image.fromarray(rgb).save(self.image_path(image_id), format=fmt)

    def image_ids(self):
        return list(self._ids)

    def image_path(self, image_id):
        # the extension says .img on purpose: the MIME type must come from the content
        return self.root / f"{image_id}.img"

    def gpt4o_key(self, image_id):
        return image_id


def settings(**kw):
    base = dict(model="gpt-4o", temperature=0.0, prompt=None, json_schema=False, timeout=2.0, max_retries=2)
    base.update(kw)
    return LiveSettings(**base)
