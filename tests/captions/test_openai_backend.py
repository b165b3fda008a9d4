"""The openai backend against a local protocol double (tests/captions/chat_double.py) — a
server that speaks the chat-completions format, not a real model."""

from __future__ import annotations

import base64
import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from chat_double import (
    BROKEN_ERROR,
    BROKEN_REFUSAL,
    EMPTY_CONTENT,
    NO_CHOICES,
    NOT_JSON,
    RATE_LIMIT,
    REDIRECT,
    SERVER_ERROR,
    SLOW,
    TRUNCATED,
    UNAUTHORIZED,
    ChatDouble,
    caption_for,
    serve,
)
from test_cache_and_run import make_cells

from urbangeo.captions import openai_backend
from urbangeo.captions.base import ChipInfo
from urbangeo.captions.cache import default_cache_path
from urbangeo.captions.openai_backend import OpenAICaptioner
from urbangeo.captions.run import caption_cells
from urbangeo.errors import InputError, RemoteError
from urbangeo.geo.cells import read_cells

KEY = "sk-test-DO-NOT-LEAK-1234567890"
PX = 24


def _chip(seed: int = 0, bands: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (bands, PX, PX), dtype=np.uint8)


def _captioner(url: str, monkeypatch: pytest.MonkeyPatch, sleeps: list[float] | None = None,
               **kw) -> OpenAICaptioner:
    monkeypatch.setenv("URBANGEO_TEST_KEY", KEY)
    opts = {"timeout": 30.0, "max_retries": 3, "backoff_s": 0.01, "rng": random.Random(0)}
    opts.update(kw)
    return OpenAICaptioner(base_url=url, model="test-vlm", prompt="Describe the city.",
                           api_key_env="URBANGEO_TEST_KEY",
                           sleep=sleeps.append if sleeps is not None else (lambda s: None),
                           **opts)


def test_success_sends_the_protocol_and_returns_the_content(monkeypatch) -> None:
    chip = _chip(1)
    with serve(ChatDouble(api_key=KEY, expected_px=PX)) as double:
        text = _captioner(double.url, monkeypatch).caption(chip, ChipInfo("c1"))
    assert double.problems == []
    assert text == caption_for(np.moveaxis(chip[:3], 0, -1))  # the PNG carried the first 3 bands
    sent = double.requests[0]
    assert sent["messages"][-1]["content"][0] == {"type": "text", "text": "Describe the city."}


@pytest.mark.parametrize("fault", [RATE_LIMIT, SERVER_ERROR, NOT_JSON, NO_CHOICES, EMPTY_CONTENT,
                                   TRUNCATED, BROKEN_ERROR])
def test_each_transient_fault_is_retried(monkeypatch, fault: str) -> None:
    sleeps: list[float] = []
    with serve(ChatDouble(api_key=KEY, faults=[fault, fault])) as double:
        text = _captioner(double.url, monkeypatch, sleeps).caption(_chip(2), ChipInfo("c"))
    assert text.startswith("A test region")
    assert len(double.requests) == 3 and len(sleeps) == 2
    if fault != RATE_LIMIT:  # (a 429 waits for its Retry-After instead)
        assert 0.005 <= sleeps[0] <= 0.01 <= sleeps[1] <= 0.02  # exponential backoff with jitter


def test_a_refusal_whose_body_breaks_off_is_one_remote_error(monkeypatch) -> None:
    """Reading the error body of a 4xx can fail too: still one RemoteError, not IncompleteRead."""
    with serve(ChatDouble(api_key=KEY, faults=[BROKEN_REFUSAL])) as double:
        captioner = _captioner(double.url, monkeypatch)
        with pytest.raises(RemoteError, match=r"answered HTTP 400: check --model"):
            captioner.caption(_chip(3), ChipInfo("c"))
    assert len(double.requests) == 1  # a refusal is not retried


def test_rate_limit_waits_at_least_retry_after(monkeypatch) -> None:
    sleeps: list[float] = []
    with serve(ChatDouble(faults=[RATE_LIMIT], retry_after="7")) as double:
        _captioner(double.url, monkeypatch, sleeps).caption(_chip(), ChipInfo("c"))
    assert sleeps == [pytest.approx(7.0)]


@pytest.mark.parametrize(("header", "wait"), [
    ("1.5", 1.5), ("Fri, 27 Nov 1998 12:00:00 -0000", 0.0), ("86400", 120.0)])
def test_retry_after_fractional_dated_and_capped(monkeypatch, header: str, wait: float) -> None:
    sleeps: list[float] = []
    with serve(ChatDouble(faults=[RATE_LIMIT], retry_after=header)) as double:
        _captioner(double.url, monkeypatch, sleeps).caption(_chip(), ChipInfo("c"))
    assert len(sleeps) == 1
    assert wait <= sleeps[0] <= max(wait, 0.01)  # the server's wish, or the tiny backoff if longer


def test_an_answer_over_the_size_limit_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(openai_backend, "MAX_ANSWER_BYTES", 100)  # an answer here is ~300 bytes
    with serve(ChatDouble()) as double:
        with pytest.raises(RemoteError, match="sent more than"):
            _captioner(double.url, monkeypatch).caption(_chip(), ChipInfo("c"))
    assert len(double.requests) == 1  # a wrong endpoint: retrying would not help


def test_url_credentials_and_query_are_sent_but_never_shown(monkeypatch, tmp_path: Path) -> None:
    basic = "Basic " + base64.b64encode(b"user:token-XYZ").decode()
    secrets = ("token-XYZ", "SECRET99", basic.split()[1])
    with serve(ChatDouble()) as double:
        url = double.url.replace("http://", "http://user:token-XYZ@") + "?api-key=SECRET99"
        captioner = OpenAICaptioner(base_url=url, model="test-vlm", prompt="Describe.",
                                    api_key_env=None, backoff_s=0.001, sleep=lambda s: None)
        path = make_cells(tmp_path)
        cells_file, report = caption_cells(read_cells(path), path, captioner)
        assert report.n_captioned == 5 and double.problems == []
        assert double.seen[-1] == ("/v1/chat/completions?api-key=SECRET99", basic)
        double.faults.extend([UNAUTHORIZED])  # echoes the Authorization header back
        with pytest.raises(RemoteError) as refused:
            captioner.caption(_chip(), ChipInfo("c"))
        double.faults.extend([SERVER_ERROR] * 5)
        with pytest.raises(RemoteError) as failed:
            captioner.caption(_chip(), ChipInfo("c"))
    assert "credentials in --base-url" in str(refused.value)
    assert "http://***@127.0.0.1" in str(failed.value) and "api-key=***" in str(failed.value)
    shown = [repr(captioner), captioner.cache_key(), str(refused.value), str(failed.value),
             json.dumps(cells_file.metadata), default_cache_path(path).read_text()]
    assert not [s for s in secrets for text in shown if s in text]
    other = OpenAICaptioner(base_url=url.replace("SECRET99", "SECRET98"), model="test-vlm",
                            prompt="Describe.", api_key_env=None)
    assert other.cache_key() != captioner.cache_key()  # same redacted URL, other server


def test_slow_answer_times_out_and_is_retried(monkeypatch) -> None:
    with serve(ChatDouble(faults=[SLOW], slow_s=3.0)) as double:
        text = _captioner(double.url, monkeypatch, timeout=1.0).caption(_chip(), ChipInfo("c"))
    assert text.startswith("A test region") and len(double.requests) == 2


def test_exhausted_retries_raise_remote_error_without_the_key(monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(ChatDouble(faults=[SERVER_ERROR] * 5)) as double:
        captioner = _captioner(double.url, monkeypatch, max_retries=2)
        with pytest.raises(RemoteError) as err:
            captioner.caption(_chip(), ChipInfo("cell-9"))
    assert len(double.requests) == 3
    message = str(err.value)
    assert "after 3 attempts" in message and "HTTP 500" in message and "cell-9" in message
    assert KEY not in message and KEY not in repr(captioner) and KEY not in caplog.text


def test_refused_key_fails_at_once_and_the_echoed_key_is_scrubbed(monkeypatch) -> None:
    with serve(ChatDouble(faults=[UNAUTHORIZED])) as double:
        with pytest.raises(RemoteError) as err:
            _captioner(double.url, monkeypatch).caption(_chip(), ChipInfo("c"))
    assert len(double.requests) == 1  # a 401 is not retried
    assert "URBANGEO_TEST_KEY" in str(err.value) and KEY not in str(err.value)
    assert KEY not in "".join(map(str, (err.value.__cause__, err.value.__context__)))


def test_redirects_are_not_followed(monkeypatch) -> None:
    with serve(ChatDouble(api_key=KEY, faults=[REDIRECT])) as double:
        with pytest.raises(RemoteError, match="redirects"):
            _captioner(double.url, monkeypatch).caption(_chip(), ChipInfo("c"))
    assert len(double.requests) == 1  # the key was not re-sent anywhere


def test_a_pasted_full_endpoint_url_works(monkeypatch) -> None:
    with serve(ChatDouble()) as double:
        captioner = _captioner(double.url + "/chat/completions/", monkeypatch)
        assert captioner.caption(_chip(), ChipInfo("c")).startswith("A test region")
    assert captioner.base_url == double.url


def test_unreachable_server_is_a_remote_error(monkeypatch) -> None:
    with serve(ChatDouble()) as double:
        url = double.url
    with pytest.raises(RemoteError, match="cannot connect"):
        _captioner(url, monkeypatch, max_retries=1).caption(_chip(), ChipInfo("c"))


def test_cache_key_changes_with_prompt_model_and_url(monkeypatch) -> None:
    base = _captioner("http://a/v1", monkeypatch).cache_key()
    assert _captioner("http://b/v1", monkeypatch).cache_key() != base
    other_prompt = OpenAICaptioner(base_url="http://a/v1", model="test-vlm", prompt="Other.")
    assert other_prompt.cache_key() != base
    assert KEY not in base


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="http"):
        OpenAICaptioner(base_url="localhost:11434", model="m", prompt="p")
    with pytest.raises(InputError, match="--model"):
        OpenAICaptioner(base_url="http://x", model="", prompt="p")


def test_concurrent_calls_share_one_instance(monkeypatch) -> None:
    chips = [_chip(i) for i in range(8)]
    with serve(ChatDouble(delay_s=0.1)) as double:
        captioner = _captioner(double.url, monkeypatch)
        with ThreadPoolExecutor(3) as pool:
            texts = list(pool.map(lambda c: captioner.caption(c, ChipInfo("c")), chips))
    assert texts == [caption_for(np.moveaxis(c[:3], 0, -1)) for c in chips]
    assert double.max_in_flight == 3
