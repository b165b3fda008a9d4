"""The shared plumbing of the network-bound stages: urbangeo._net (redaction, Retry-After,
backoff, capped reads) and urbangeo._concurrency (the bounded thread pool)."""

from __future__ import annotations

import base64
import io
import random
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from urbangeo._concurrency import bounded_map
from urbangeo._net import (
    MAX_RETRY_AFTER_S,
    backoff_s,
    read_limited,
    redact,
    retry_after_s,
    split_credentials,
    url_secrets,
)
from urbangeo.errors import RemoteError

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def test_redact_hides_user_password_and_every_query_value() -> None:
    assert redact("https://me:pw@t.example/{z}/{x}/{y}.png?key=abc&style=x") == (
        "https://***@t.example/{z}/{x}/{y}.png?key=***&style=***")
    assert redact("http://localhost:11434/v1") == "http://localhost:11434/v1"


def test_retry_after_seconds_fractional_and_capped() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(" 1.5 ") == 1.5
    assert retry_after_s("100000") == MAX_RETRY_AFTER_S
    assert retry_after_s("7", cap=5.0) == 5.0
    for bad in (None, "", "soon", "-5", "nan", "inf", "1e3"):
        assert retry_after_s(bad) is None


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))])
def test_retry_after_http_dates_in_any_zone(zone: timezone) -> None:
    when = format_datetime((NOW + timedelta(seconds=30)).astimezone(zone))
    assert retry_after_s(when, now=NOW.timestamp()) == pytest.approx(30.0)


def test_retry_after_date_in_unknown_zone_is_utc_not_a_crash() -> None:
    # "-0000" makes email.utils return a naive datetime; it used to raise TypeError
    assert retry_after_s("Fri, 27 Nov 2026 12:00:45 -0000", now=NOW.timestamp()) == 45.0
    assert retry_after_s("Fri, 27 Nov 2026 11:00:00 GMT", now=NOW.timestamp()) == 0.0  # past
    assert retry_after_s("Fri, 27 Nov 2027 11:00:00 GMT", now=NOW.timestamp()) == (
        MAX_RETRY_AFTER_S)


def test_backoff_grows_with_jitter_and_honours_the_server() -> None:
    rng = random.Random(1)
    waits = [backoff_s(a, base_s=1.0, max_s=10.0, rng=rng) for a in range(6)]
    for attempt, wait in enumerate(waits):
        ceiling = min(10.0, 2.0**attempt)
        assert 0.5 * ceiling <= wait <= ceiling
    assert len(set(waits)) == len(waits)  # jittered, not lockstep
    assert backoff_s(0, base_s=1.0, max_s=10.0, retry_after=7.0) == 7.0
    assert backoff_s(3, base_s=1.0, max_s=10.0, retry_after=0.0, rng=random.Random(0)) >= 4.0


class _Response(io.BytesIO):
    def __init__(self, body: bytes, length: str | None = None) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": length} if length else {}


def test_read_limited_reads_up_to_the_limit_and_refuses_more() -> None:
    body = bytes(range(256)) * 5000  # 1.28 MB, more than one read chunk
    assert read_limited(_Response(body), len(body), "tile x") == body
    with pytest.raises(RemoteError, match=r"tile x sent more than 1\.2"):
        read_limited(_Response(body), len(body) - 1, "tile x")


def test_read_limited_trusts_a_too_large_content_length_without_reading() -> None:
    response = _Response(b"", length=str(50 * 2**20))
    with pytest.raises(RemoteError, match="more than 32 MB"):
        read_limited(response, 32 * 2**20, "tile y")


def test_credentials_leave_the_url_as_a_basic_auth_header() -> None:
    url, header = split_credentials("https://user:p%40ss@host/v1?api-key=SECRET")
    assert url == "https://host/v1?api-key=SECRET"
    assert base64.b64decode(header.removeprefix("Basic ")) == b"user:p@ss"
    assert split_credentials("http://host/v1") == ("http://host/v1", None)
    assert set(url_secrets("https://user:p%40ss@host/v1?api-key=SECRET&v=1")) == {
        "user:p%40ss", "p@ss", "SECRET"}


def test_bounded_map_keeps_at_most_twice_the_workers_in_flight() -> None:
    lock = threading.Lock()
    state = {"started": 0, "consumed": 0, "max_ahead": 0}

    def items():
        for i in range(40):
            with lock:
                state["started"] += 1
                state["max_ahead"] = max(state["max_ahead"], state["started"] - state["consumed"])
            yield i

    def slow_square(i: int) -> int:
        time.sleep(0.002)
        return i * i

    results = {}
    for item, value in bounded_map(slow_square, items(), 3):
        with lock:
            state["consumed"] += 1
        results[item] = value
    assert results == {i: i * i for i in range(40)}
    assert state["max_ahead"] <= 2 * 3


def test_bounded_map_propagates_errors_and_runs_one_worker_inline() -> None:
    def boom(i: int) -> int:
        if i == 5:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        list(bounded_map(boom, range(20), 4))
    threads = {item: threading.current_thread() for item, _ in bounded_map(str, range(3), 1)}
    assert set(threads.values()) == {threading.current_thread()}
    assert [item for item, _ in bounded_map(str, range(5), 1)] == [0, 1, 2, 3, 4]  # in order
