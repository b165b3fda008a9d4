"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint that accepts images.

Ollama, llama.cpp's server, vLLM, LM Studio and hosted APIs all speak the same
``POST {base_url}/chat/completions`` format, so one small stdlib client covers them. The chip's
first three bands go as a PNG data URL next to the instruction. Transient trouble (timeouts,
dropped connections, 429, 5xx, unreadable bodies) is retried with exponential backoff and
jitter; what is left after the last retry becomes a :class:`~urbangeo.errors.RemoteError`.
The API key is read from an environment variable and never appears in a repr, log or message;
the base URL is redacted (user:password and query values hidden) wherever it is shown or stored,
and credentials written in it are sent as HTTP Basic auth when no API key is set.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image

from urbangeo._net import (
    backoff_s,
    read_limited,
    redact,
    retry_after_s,
    split_credentials,
    url_secrets,
)
from urbangeo.captions.base import ChipInfo
from urbangeo.captions.registry import prompt_hash
from urbangeo.errors import InputError, RemoteError

MAX_ANSWER_BYTES = 4 * 2**20  # a caption answer is a few kB; more means a wrong endpoint
_ERROR_DETAIL_BYTES = 4096  # enough of an error body to show its first 200 characters


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they would carry the Authorization header to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; ``retry_after`` is the server's wish (s)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def chip_to_png_data_url(chip: np.ndarray) -> str:
    """The chip's first three bands (the display RGB) as a ``data:image/png;base64,`` URL."""
    if chip.ndim != 3 or chip.shape[0] < 3:
        raise InputError(f"a chip must be (bands>=3, y, x); got shape {chip.shape}")
    rgb = np.ascontiguousarray(np.moveaxis(chip[:3], 0, -1).astype(np.uint8, copy=False))
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICaptioner:
    """Captions chips through an OpenAI-compatible ``/chat/completions`` endpoint.

    Thread-safe: each call opens its own connection, so a thread pool may share one instance.
    ``sleep`` and ``rng`` are injectable so tests can check backoff without waiting for it.
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        prompt: str,
        system_prompt: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 4,
        max_tokens: int = 400,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"--base-url {redact(base_url)!r} must start with http:// or "
                             "https:// (e.g. http://localhost:11434/v1 for Ollama)")
        if not model:
            raise InputError("the openai backend needs --model (the name the server knows the "
                             "vision model by, e.g. llava or qwen2.5vl)")
        if not prompt.strip():
            raise InputError("the caption prompt is empty: give a --prompt-file with the "
                             "instruction")
        if timeout <= 0 or max_retries < 0:
            raise InputError("--timeout must be > 0 and --max-retries >= 0")
        # people often paste the full endpoint; the client adds /chat/completions itself
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/").removesuffix("/chat/completions")
        self.base_url = urlunsplit(parts._replace(path=path))
        self.label = redact(self.base_url)  # what messages, repr and metadata show
        endpoint = urlunsplit(parts._replace(path=path + "/chat/completions"))
        self._endpoint, self._basic_auth = split_credentials(endpoint)
        self._shown_endpoint = redact(endpoint)
        self._url_secrets = url_secrets(self.base_url)
        self.model = model
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        # Read once; kept private and out of repr. None means "send no Authorization header",
        # which is what local servers (Ollama, llama.cpp) expect.
        self.__api_key = os.environ.get(api_key_env) if api_key_env else None

    def __repr__(self) -> str:
        key_state = f"from ${self.api_key_env}" if self.__api_key else "none"
        return (f"OpenAICaptioner(base_url={self.label!r}, model={self.model!r}, "
                f"api_key={key_state})")

    def cache_key(self) -> str:
        """Saved in the cells metadata, so it names the server by its redacted URL plus a
        one-way hash of the full one (two servers differing only in a query value differ)."""
        url_hash = hashlib.sha256(self.base_url.encode("utf-8")).hexdigest()[:16]
        return (f"openai|{self.label}|url={url_hash}|{self.model}"
                f"|{prompt_hash(self._full_prompt())}|max_tokens={self.max_tokens}")

    def _full_prompt(self) -> str:
        return f"{self.system_prompt or ''}\n{self.prompt}"

    def caption(self, chip: np.ndarray, info: ChipInfo) -> str:
        body = json.dumps(self._request_body(chip)).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(body)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_retries:
                    break
                self._sleep(self._delay(attempt, exc.retry_after))
        raise RemoteError(self._scrub(
            f"{self._shown_endpoint} failed for cell {info.cell_id} after "
            f"{self.max_retries + 1} attempts: {last}. Check that the server is running and serves "
            f"model {self.model!r}; rerun `urbangeo caption` to fill the cells that failed"
        ))

    def _request_body(self, chip: np.ndarray) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": [
            {"type": "text", "text": self.prompt},
            {"type": "image_url", "image_url": {"url": chip_to_png_data_url(chip)}},
        ]})
        return {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": 0, "stream": False}

    def _attempt(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__api_key:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        elif self._basic_auth:
            headers["Authorization"] = self._basic_auth
        request = urllib.request.Request(self._endpoint, data=body, headers=headers,
                                         method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = read_limited(response, MAX_ANSWER_BYTES,
                                   f"the answer of {self._shown_endpoint}")
        except urllib.error.HTTPError as exc:
            try:
                detail = _short(exc.read(_ERROR_DETAIL_BYTES))
            except (OSError, http.client.HTTPException):  # the error body itself broke off
                detail = ""
            finally:
                exc.close()
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} {detail}".rstrip(),
                                 retry_after_s(exc.headers.get("Retry-After"))) from None
            raise RemoteError(self._scrub(self._client_error_message(exc.code, detail))) from None
        except TimeoutError:
            raise _Retryable(f"no answer within --timeout {self.timeout:g} s") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"cannot connect ({reason})") from None
        except http.client.HTTPException as exc:  # e.g. IncompleteRead: the connection broke
            raise _Retryable(f"the answer broke off ({type(exc).__name__})") from None
        return _caption_from_body(raw)

    def _client_error_message(self, code: int, detail: str) -> str:
        refused = (f"the server refused the API key: set a valid key in ${self.api_key_env}"
                   if self.api_key_env else "the server refused the credentials in --base-url")
        hint = {
            401: refused,
            403: refused,
            404: "check --base-url (it usually ends in /v1) and that the server knows --model "
                 f"{self.model!r}",
        }.get(code) or (
            "the server redirects: give the final address as --base-url" if 300 <= code < 400
            else "check --model and that the model accepts images")
        status = f"HTTP {code} {detail}".rstrip()
        return f"{self._shown_endpoint} answered {status}: {hint}"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        return backoff_s(attempt, base_s=self._backoff_s, max_s=self._max_backoff_s,
                         retry_after=retry_after, rng=self._rng)

    def _scrub(self, text: str) -> str:
        """Remove the key and the URL's secrets from any text that leaves this object
        (servers sometimes echo them)."""
        basic_token = self._basic_auth.split()[-1] if self._basic_auth else None
        for secret in (self.__api_key, basic_token, *self._url_secrets):
            if secret:
                text = text.replace(secret, "***")
        return text


def _caption_from_body(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        raise _Retryable(f"the answer is not JSON: {_short(raw)}") from None
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable("the answer has no choices[0].message.content") from None
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise _Retryable("the answer's message content is empty")
    return content.strip()


def _short(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
