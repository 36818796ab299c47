"""Credentials never reach a file: the redaction helper, and the Ollama path a new user
takes behind an authenticating proxy (OLLAMA_HOST=http://user:password@host), through bench,
aggregate and report."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from ollabench.bench.loop import run_bench
from ollabench.errors import BackendUnavailable
from ollabench.redaction import REDACTED, redact_headers, redact_url, remember, scrub
from ollabench.report import run_report
from ollabench.stats import run_aggregate
from tests.helpers.fake_ollama import FakeOllama
from tests.helpers.project import tiny_config

PASSWORD = "pr0xy-Passw0rd-93a1"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pw1234@host:11434", f"http://{REDACTED}@host:11434"),
    ("user:pw1234@host:11434", f"{REDACTED}@host:11434"),
    ("https://host/v1?api_key=abcd1234&x=1", f"https://host/v1?api_key={REDACTED}&x=1"),
    ("http://token9876@host/v1", f"http://{REDACTED}@host/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("1", "1"),
])
def test_urls_lose_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_headers_and_free_text_are_scrubbed() -> None:
    remember("sk-remembered-5555")
    assert redact_headers({"Authorization": "Bearer x", "Server": "uvicorn"}) == \
        {"Authorization": REDACTED, "Server": "uvicorn"}
    text = "echoed sk-remembered-5555 at http://u:p4ss@h:1/v1?token=zzzz9"
    assert scrub(text) == f"echoed {REDACTED} at http://{REDACTED}@h:1/v1?token={REDACTED}"


def _every_file_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace")
                     for p in root.rglob("*") if p.is_file())


def test_a_password_in_ollama_host_reaches_no_file(
        fake_ollama: FakeOllama, raw_config: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leak of issue 24: env.json, the DVC-cached raw data and the committed report held
    OLLAMA_HOST's password verbatim."""
    host = fake_ollama.url.replace("http://", f"http://proxyuser:{PASSWORD}@")
    monkeypatch.setenv("OLLAMA_HOST", host)
    raw_config["model"] = {"name": "qwen2.5:7b", "backend": "ollama"}
    config = tiny_config(raw_config, runs=2)
    run_bench(config, tmp_path / "raw", journal_root=tmp_path / "journal", progress=False)
    run_aggregate(tmp_path / "raw", tmp_path / "processed", tmp_path / "metrics.json", 5.0)
    run_report(tmp_path / "raw", tmp_path / "processed", tmp_path / "report.md",
               tmp_path / "figures")

    everything = _every_file_text(tmp_path)
    assert PASSWORD not in everything
    assert f"http://{REDACTED}@127.0.0.1" in (tmp_path / "raw" / "env.json").read_text()
    basic = base64.b64encode(f"proxyuser:{PASSWORD}".encode()).decode()
    assert {c.authorization for c in fake_ollama.chats()} == {f"Basic {basic}"}


def test_ollama_sends_a_bearer_key_from_the_environment_and_records_none(
        fake_ollama: FakeOllama, raw_config: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_KEY", "sk-proxy-key-2718281828")
    raw_config["model"] = {"name": "qwen2.5:7b", "backend": "ollama", "host": fake_ollama.url,
                           "api_key_env": "PROXY_KEY"}
    run_bench(tiny_config(raw_config, runs=1), tmp_path / "raw",
              journal_root=tmp_path / "journal", progress=False)
    assert {c.authorization for c in fake_ollama.exchanges} == {
        "Bearer sk-proxy-key-2718281828"}
    assert "sk-proxy-key" not in _every_file_text(tmp_path)


def test_an_unreachable_ollama_host_names_no_password(
        closed_port: int, monkeypatch: pytest.MonkeyPatch, raw_config: dict[str, Any],
        tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"http://proxyuser:{PASSWORD}@127.0.0.1:{closed_port}")
    raw_config["model"] = {"name": "qwen2.5:7b", "backend": "ollama"}
    raw_config["run"]["connect_timeout_s"] = 1.0
    with pytest.raises(BackendUnavailable) as raised:
        run_bench(tiny_config(raw_config), tmp_path / "raw", journal_root=tmp_path / "j",
                  progress=False)
    assert PASSWORD not in str(raised.value)
    assert str(raised.value).startswith(
        f"cannot reach the Ollama server at http://{REDACTED}@127.0.0.1:{closed_port}")
