"""The report's noise section: drawn from noise.csv, left out for an aggregate without it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mdutils.mdutils import MdUtils

from ollabench.report.noise import noise_section, read_noise


def test_the_section_names_the_noisiest_comparison(tmp_path: Path) -> None:
    pd.DataFrame([
        {"stage": "analysis", "metric": "ttft_ms", "runs": 40, "run_noise_pct": 12.0,
         "paired_noise_pct": 6.0, "pairing_removes_pct": 75.0, "drift_pct": 3.0,
         "bimodality": 0.7, "two_levels": True, "lag1_autocorr": 0.4, "position_pct": 2.0,
         "runs_needed": 13.0},
        {"stage": "workflow", "metric": "e2e_ms", "runs": 40, "run_noise_pct": 4.0,
         "paired_noise_pct": 3.0, "pairing_removes_pct": 44.0, "drift_pct": -1.0,
         "bimodality": 0.3, "two_levels": False, "lag1_autocorr": 0.1, "position_pct": 0.5,
         "runs_needed": 4.0}]).to_csv(tmp_path / "noise.csv", index=False)
    md = MdUtils(file_name="report")
    noise_section(md, read_noise(tmp_path), 5.0)
    text = md.get_md_text()
    assert "## Noise on this machine" in text
    assert "|analysis|TTFT|12.0%|6.0%|75.0%|+3.0%|0.7000 (two levels)|0.4000|+2.0%|13|" in text
    assert "The noisiest, analysis TTFT, needs about 13 runs per arm" in text


def test_no_noise_file_no_section(tmp_path: Path) -> None:
    md = MdUtils(file_name="report")
    noise_section(md, read_noise(tmp_path), 5.0)
    assert "Noise on this machine" not in md.get_md_text()
