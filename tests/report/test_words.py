"""Wording that must stay true to what was measured."""

from __future__ import annotations

from ollabench.report.words import clocks_sentence


def test_load_time_is_credited_to_the_clock_that_took_it() -> None:
    assert "load times are measured by ollabench" in clocks_sentence("llamacpp")
    assert "load, prompt-eval and eval times come from the Ollama server" in clocks_sentence(
        "ollama")
    assert "from the backend (not recorded)" in clocks_sentence(None)
