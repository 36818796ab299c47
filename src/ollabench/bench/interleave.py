"""run.interleave: how finely the two arms alternate (docs/statistics.md, "Interleaving").

`run` (the default): each run plays one arm's whole workload, then the other's (A A B B),
and a warm-up follows every switch of arm. `call`: within each run the arms alternate call
by call, ABBA at the call level (A.analysis, B.analysis, B.report, A.report; the next run
starts with the other arm), so each stage's two calls run back to back and slow machine
noise (drift, regimes) hits both arms alike. That is only worth it where switching arms
costs nothing: the embedded engine keeps one model instance per arm's load-time options
(backends/llamacpp.py); a server must not reload between the arms' calls.

Plain Python only: config/schema.py checks the settings with the rest of run, the bench
loop checks the backends (after their preflight, before the first call).
"""

from __future__ import annotations

from ollabench.errors import ConfigError

CALL = "call"
FIX = "or set run.interleave: run"


def check_interleave(interleave: str, order: str, concurrency: list[int],
                     open_loop: bool, cold_start: bool) -> None:
    """Refuse the run settings `call` cannot serve, naming the key and what to do."""
    if interleave != CALL:
        return
    if order == "sequential":
        raise ConfigError("run.interleave: call alternates the arms within every run; run.order "
                          f"sequential runs one arm's runs after the other's: use abba or random, "
                          f"{FIX}")
    if concurrency != [1] or open_loop:
        raise ConfigError("run.interleave: call runs one agent at a time; run.concurrency "
                          f"{concurrency}{' with run.arrivals' if open_loop else ''} runs blocks "
                          f"of agents: set run.concurrency [1] and run.arrivals.rate_per_min "
                          f"null, {FIX}")
    if cold_start:
        raise ConfigError("run.interleave: call keeps both arms loaded; run.cold_start true "
                          f"unloads the model at every switch of arm, i.e. at every call: {FIX}")


def backend_refusal(backend: str, switch_free: bool, backends: int,
                    switch_reloads: bool) -> str | None:
    """Why `call` cannot run on these backends (None: it can): a server that holds one model
    instance would reload it at every call when the arms' load-time options (or models)
    differ. `switch_free`: every backend keeps each arm's engine loaded side by side."""
    if switch_free:
        return None
    if backends > 1:
        return (f"run.interleave: call needs both arms on one model: with reference_model the "
                f"{backend} server would swap models (a reload) at every call; {FIX} (a warm-up "
                f"after each switch absorbs the load)")
    if switch_reloads:
        return (f"run.interleave: call needs both arms' load-time options to match on the "
                f"{backend} backend: this server would reload the model at every call; give "
                f"both arms the same load-time options (num_ctx, num_batch, num_gpu, "
                f"num_thread, ...), {FIX} (a warm-up after each switch absorbs the reload)")
    return None
