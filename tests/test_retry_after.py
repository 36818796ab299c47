"""A busy server's Retry-After (429, 503), on both server backends against their scripted
servers: the next try waits what the server asked (bounded by run.retry_after_max_s), and
the record says the wait and the bound."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from ollabench.backends.http_stream import retry_after_s
from ollabench.bench.loop import run_bench
from ollabench.records.schema import HTTP_ERROR, OK, CallRecord
from tests.helpers.fake_ollama import FakeOllama
from tests.helpers.fake_ollama import Script as OllamaScript
from tests.helpers.fake_openai import FakeOpenAI, Script
from tests.helpers.project import tiny_config

NOW = datetime(2026, 12, 8, 1, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("header", "seconds"), [
    ("2", 2.0), (" 0 ", 0.0), (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ("Tue, 08 Dec 2026 00:59:00 GMT", 0.0),  # a past date: retry now
    ("soon", None), ("-3", None), ("1.5", None), ("", None), (None, None),
])
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None,
                                                        seconds: float | None) -> None:
    assert retry_after_s(header, now=NOW) == seconds


def _first_slot(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.seq == min(r.seq for r in records)]


def _gap_s(earlier: CallRecord, later: CallRecord) -> float:
    return (datetime.fromisoformat(later.started_at)
            - datetime.fromisoformat(earlier.started_at)).total_seconds()


def _openai_bench(raw_config: dict[str, Any], tmp_path: Path, *scripts: Script,
                  **run: Any) -> list[CallRecord]:
    """A sequential one-run bench on the scripted OpenAI server, answering `scripts` first."""
    with FakeOpenAI() as server:
        raw_config["model"] = {"name": server.model, "backend": "openai",
                               "base_url": server.url}
        config = tiny_config(raw_config, runs=1, warmup=0, retry_backoff_s=0.01,
                             order="sequential", **run)
        server.queue(*scripts)
        return run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j",
                         progress=False)


def test_openai_busy_answers_wait_what_the_server_asks(raw_config: dict[str, Any],
                                                      tmp_path: Path) -> None:
    records = _openai_bench(
        raw_config, tmp_path,
        Script(status=429, headers={"Retry-After": "1"},
               body='{"error": {"message": "queue full"}}'),
        Script(status=503, body="Service Unavailable"), max_retries=2, retry_after_max_s=30.0)

    first = _first_slot(records)
    assert [(r.outcome, r.http_status, r.retry_after_s) for r in first] == [
        (HTTP_ERROR, 429, 1.0), (HTTP_ERROR, 503, None), (OK, None, None)]
    assert first[0].error == "HTTP 429: queue full; Retry-After 1 s: a retry waits 1 s"
    assert _gap_s(first[0], first[1]) >= 1.0  # the server's second, not the 0.01 s backoff
    assert _gap_s(first[1], first[2]) < 1.0  # no Retry-After: the backoff again


def test_ollama_retry_after_is_bounded_by_the_run(fake_ollama: FakeOllama,
                                                 raw_config: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """Ollama itself sends no Retry-After: v0.33.0-rc2 server/routes.go handleScheduleError
    answers the scheduler's full queue (server/sched.go ErrMaxQueue) with a bare 503 and a JSON
    error. The header comes from a proxy in front of it (rate limiting, authentication), which
    this scripted server plays."""
    raw_config["model"] = {"name": "qwen2.5:7b", "backend": "ollama", "gguf": None,
                           "host": fake_ollama.url, "think": None, "keep_alive": None}
    config = tiny_config(raw_config, runs=1, warmup=0, max_retries=1, retry_backoff_s=0.01,
                         retry_after_max_s=0.3, read_timeout_s=2.0, order="sequential")
    fake_ollama.queue(OllamaScript(status=503, error="server busy",
                                         headers={"Retry-After": "3600"}))
    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)

    first = _first_slot(records)
    assert [(r.outcome, r.retry_after_s) for r in first] == [(HTTP_ERROR, 0.3), (OK, None)]
    assert first[0].error == ("HTTP 503: server busy; Retry-After 3600 s: a retry waits "
                              "0.3 s, bounded by run.retry_after_max_s (0.3 s)")
    assert 0.3 <= _gap_s(first[0], first[1]) < 3600


def test_other_statuses_keep_no_retry_after(raw_config: dict[str, Any],
                                            tmp_path: Path) -> None:
    """Retry-After on a 500 is not a busy server's ask: the backoff stands."""
    records = _openai_bench(raw_config, tmp_path,
                            Script(status=500, headers={"Retry-After": "60"}), max_retries=1)
    first = _first_slot(records)
    assert [(r.http_status, r.retry_after_s) for r in first] == [(500, None), (None, None)]
    assert _gap_s(first[0], first[1]) < 60

