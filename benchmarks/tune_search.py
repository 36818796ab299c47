"""How often `ollabench tune` returns the true best setting: seeded searches against a fake
Ollama server with a known speed surface; the figures behind docs/experiments.md
("Tuning", How often it finds the best).

Run as `python benchmarks/tune_search.py [--trials 20] [--candidates 6] [--jitter 0.15]`
(about a minute per trial on a 2-core machine). Not part of run_all.py's timed runs: it
measures the search, not the harness's speed. --smoke: one trial of 2 candidates (the
truncating setting must still not win); what CI runs so the script cannot rot.

The surface (tests/helpers/speed_surface.grid_surface): decode fastest at num_batch 256 and
num_thread 2, slower by a fixed step per step away from them, the baseline slowest; num_ctx
16 is faster than everything but cuts the prompt. Every token's time is jittered by
+-jitter (uniform, seeded per trial). The space num_batch {128, 256, 512} x num_thread
{1, 2, 4} x num_ctx {16, 2048} has 18 points; with --candidates below 18 the search is TPE
(seeded per trial), so finding the best is not guaranteed. Reported: the share of trials
whose confirmed winner is the true best, the share that picked the truncating setting (must
be 0), the share confirmed, and the median candidates measured and minutes of calls.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.helpers.speed_surface import MODEL, SurfaceOllama, grid_surface  # noqa: E402

from ollabench.config.schema import compose, validate_config  # noqa: E402
from ollabench.tune import run_tune  # noqa: E402
from ollabench.tune.settings import validate_tune  # noqa: E402

BEST = {"num_batch": 256, "num_thread": 2, "num_ctx": 2048}
CUT_CTX = 16
SPACE = {"num_batch": [128, 256, 512], "num_thread": [1, 2, 4], "num_ctx": [CUT_CTX, 2048]}
WORKLOAD = {"runs.csv": "gpu,ttft_ms,eval_tok_s\nA,180,128\nB,402,51\nA,190,126\n",
            "notes.md": "# Notes\n- The first request took 9.8 s.\n"}


def one_trial(seed: int, candidates: int, jitter: float, folder: Path) -> dict[str, object]:
    raw = compose()
    tune_raw = yaml.safe_load((ROOT / "conf" / "tune" / "default.yaml").read_text())
    tune_raw |= {"space": copy.deepcopy(SPACE), "seed": seed, "sampler": "tpe",
                 "budget": {"max_candidates": candidates, "max_minutes": 60.0},
                 "race": {**tune_raw["race"], "max_runs": 8},
                 "confirm": {**tune_raw["confirm"], "max_runs": 12}}
    workload = folder / "workload"
    workload.mkdir()
    for name, text in WORKLOAD.items():
        (workload / name).write_text(text)
    with SurfaceOllama(grid_surface((256, 2), CUT_CTX), jitter=jitter, seed=seed) as server:
        raw["model"] = {"name": MODEL, "backend": "ollama", "gguf": None, "host": server.url,
                        "think": None, "keep_alive": None}
        raw["workload"] |= {"dir": str(workload), "num_predict": {"analysis": 12, "report": 12}}
        raw["run"].update(retry_backoff_s=0.01, read_timeout_s=5.0, max_retries=1)
        config = validate_config(raw)
        # the search alone: its candidates as DVC experiments are not what is measured here
        result = run_tune(config, validate_tune(tune_raw, config), folder,
                          progress=False, experiments=False).result
    picked = result.best.result.options if result.best else None
    measured = [c for c in result.candidates if c.duplicate_of is None]
    return {"picked": picked, "best": picked == BEST and result.confirmed,
            "truncating": bool(picked and picked["num_ctx"] == CUT_CTX),
            "confirmed": result.confirmed, "candidates": len(measured),
            "minutes": sum(c.result.minutes for c in measured)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--jitter", type=float, default=0.15)
    parser.add_argument("--smoke", action="store_true", help="one trial of 2 candidates")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.candidates = 1, 2
    rows = []
    started = time.monotonic()
    for seed in range(args.trials):
        with tempfile.TemporaryDirectory() as folder:
            rows.append(one_trial(seed, args.candidates, args.jitter, Path(folder)))
        print(f"trial {seed}: {rows[-1]}", flush=True)
    share = {key: sum(bool(r[key]) for r in rows) / len(rows)
             for key in ("best", "truncating", "confirmed")}
    print(f"{args.trials} trials, {args.candidates} candidates of 18, jitter "
          f"+-{args.jitter:.0%}: true best returned and confirmed in {share['best']:.0%}, "
          f"truncating setting picked in {share['truncating']:.0%}, a winner confirmed in "
          f"{share['confirmed']:.0%}; median {statistics.median(r['candidates'] for r in rows)}"
          f" candidates, {statistics.median(r['minutes'] for r in rows):.2f} minutes of calls"
          f"; {time.monotonic() - started:.0f} s in all")
    return 0 if share["truncating"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
