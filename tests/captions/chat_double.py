"""A protocol double of an OpenAI-compatible chat-completions server, NOT a real model.

It listens on 127.0.0.1 (an ephemeral port) in a background thread, checks that each request
has the shape the ``openai`` backend must send (model, messages, a text part and a PNG data URL
of the expected size, the Authorization header when a key is expected), and answers with a
deterministic made-up caption derived from the image's pixels, so tests can tell chips apart.
Faults are injected per request from a queue (``faults``) or per image (``fail_if``), and the
server records every request (body, and the path with its query and the Authorization header
in ``seen``) and the largest number it served at once.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

PNG_PREFIX = "data:image/png;base64,"

# Fault names understood by ChatDouble.faults.
RATE_LIMIT = "429"          # HTTP 429 with Retry-After
SERVER_ERROR = "500"        # HTTP 500
SLOW = "slow"               # answers after ChatDouble.slow_s (longer than the client's timeout)
NOT_JSON = "not_json"       # 200 with a body that is not JSON
NO_CHOICES = "no_choices"   # 200 with JSON lacking choices
EMPTY_CONTENT = "empty"     # 200 with an empty message content
UNAUTHORIZED = "401"        # HTTP 401, echoing the Authorization header back (a careless server)
REDIRECT = "307"            # a redirect to this same endpoint (a client must not follow it)
TRUNCATED = "truncated"     # 200 whose body breaks off before its Content-Length (IncompleteRead)
BROKEN_ERROR = "broken_500"   # HTTP 500 whose chunked error body breaks off (IncompleteRead)
BROKEN_REFUSAL = "broken_400"  # HTTP 400 whose chunked error body breaks off


def caption_for(image: np.ndarray) -> str:
    """The caption the double gives an image: a function of its pixels, nothing more."""
    return f"A test region with mean brightness {image.mean():.1f} and {image.shape[1]} px wide."


@dataclass
class ChatDouble:
    """State shared between the test and the server thread."""

    model: str = "test-vlm"
    api_key: str | None = None
    expected_px: int | None = None
    delay_s: float = 0.0
    slow_s: float = 2.0
    retry_after: str = "1"
    faults: deque[str] = field(default_factory=deque)
    fail_if: Callable[[np.ndarray], bool] | None = None
    requests: list[dict] = field(default_factory=list)
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    max_in_flight: int = 0
    url: str = ""
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.faults = deque(self.faults)

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def next_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def record(self, request: dict, problem: str | None) -> None:
        with self._lock:
            self.requests.append(request)
            if problem:
                self.problems.append(problem)


def _validate(double: ChatDouble, headers, body: dict) -> tuple[np.ndarray | None, str | None]:
    """The decoded image and the first protocol violation found (None when the request is valid)."""
    if double.api_key is not None and headers.get("Authorization") != f"Bearer {double.api_key}":
        return None, "missing or wrong Authorization header"
    if body.get("model") != double.model:
        return None, f"model {body.get('model')!r} != {double.model!r}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        return None, "messages must end with a user turn"
    parts = messages[-1].get("content")
    if not isinstance(parts, list):
        return None, "user content must be a list of parts"
    texts = [p for p in parts if p.get("type") == "text" and p.get("text", "").strip()]
    urls = [p.get("image_url", {}).get("url", "") for p in parts if p.get("type") == "image_url"]
    if not texts or len(urls) != 1 or not urls[0].startswith(PNG_PREFIX):
        return None, "user content needs a text part and one PNG data URL"
    image = Image.open(io.BytesIO(base64.b64decode(urls[0][len(PNG_PREFIX):], validate=True)))
    if image.format != "PNG" or image.mode != "RGB":
        return None, f"image is {image.format} {image.mode}, expected an RGB PNG"
    if double.expected_px is not None and image.size != (double.expected_px, double.expected_px):
        return None, f"image size {image.size} != {double.expected_px} px square"
    if body.get("temperature") != 0 or not isinstance(body.get("max_tokens"), int):
        return None, "temperature must be 0 and max_tokens an int"
    return np.asarray(image), None


def _handler(double: ChatDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self._leave()  # before the client can read the answer and send its next request
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def _leave(self) -> None:
            if not self._left:
                self._left = True
                double.leave()

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            self._left = False
            double.enter()
            try:
                self._answer()
            finally:
                self._leave()

        def _answer(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with double._lock:
                double.seen.append((self.path, self.headers.get("Authorization")))
            if self.path.split("?")[0] != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            image, problem = _validate(double, self.headers, body)
            double.record(body, problem)
            if problem:
                self._send(400, json.dumps({"error": problem}).encode())
                return
            time.sleep(double.delay_s)
            fault = double.next_fault()
            if fault is None and double.fail_if is not None and double.fail_if(image):
                fault = SERVER_ERROR
            if fault == RATE_LIMIT:
                self._send(429, b'{"error": "slow down"}', {"Retry-After": double.retry_after})
            elif fault == SERVER_ERROR:
                self._send(500, b'{"error": "internal"}')
            elif fault == UNAUTHORIZED:
                echoed = json.dumps({"error": f"bad key: {self.headers.get('Authorization')}"})
                self._send(401, echoed.encode())
            elif fault == REDIRECT:
                self._send(307, b"{}", {"Location": f"{double.url}/chat/completions"})
            elif fault == NOT_JSON:
                self._send(200, b"<html>gateway hiccup</html>")
            elif fault == NO_CHOICES:
                self._send(200, b'{"id": "x", "object": "chat.completion"}')
            elif fault == EMPTY_CONTENT:
                self._send(200, _completion(double.model, ""))
            elif fault in (BROKEN_ERROR, BROKEN_REFUSAL):
                # a chunk announced as 0x400 bytes, cut short by closing the connection
                self.send_response(500 if fault == BROKEN_ERROR else 400)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b'400\r\n{"error": ')
                self.close_connection = True
            elif fault == TRUNCATED:
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"choices": [')
                self.close_connection = True
            else:
                if fault == SLOW:
                    time.sleep(double.slow_s)
                self._send(200, _completion(double.model, caption_for(image)))

    return Handler


def _completion(model: str, content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


@contextmanager
def serve(double: ChatDouble) -> Iterator[ChatDouble]:
    """Run ``double`` on 127.0.0.1:<free port>; ``double.url`` is its ``/v1`` base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(double))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    double.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
