"""The host's noise on the record: real kernel counters, and the arithmetic behind them."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from ollabench.bench.host import HostReading, busy_warning, cpu_probe_ms, host_load, read_host
from ollabench.report.words import cause_text
from ollabench.stats.quality import cause_table


def reading(at_s: float, busy_s: float, steal_s: float = 0.0, own_s: float = 0.0,
            load_1m: float | None = 0.5) -> HostReading:
    return HostReading(at_s=at_s, busy_s=busy_s, steal_s=steal_s, own_s=own_s,
                       load_1m=load_1m)


def test_other_processes_cpu_is_the_machines_busy_time_less_our_own() -> None:
    cpus = psutil.cpu_count() or 1
    # 2 s of wall time: capacity 2 * cpus CPU-seconds; the machine was busy 1.5 s, 1.0 of
    # them ours, and 0.2 s were stolen.
    fields = host_load(reading(10.0, 100.0, 1.0, 40.0, load_1m=1.25),
                       reading(12.0, 101.5, 1.2, 41.0))
    assert fields["host_other_cpu_pct"] == pytest.approx(100 * 0.5 / (2 * cpus), abs=0.05)
    assert fields["host_steal_pct"] == pytest.approx(100 * 0.2 / (2 * cpus), abs=0.05)
    assert fields["host_load_1m"] == 1.25  # as the call started


def test_a_zero_length_interval_is_unknown_not_zero() -> None:
    fields = host_load(reading(5.0, 1.0), reading(5.0, 1.0))
    assert fields["host_other_cpu_pct"] is None and fields["host_steal_pct"] is None


def test_a_spinning_child_process_shows_as_other_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        before = read_host()
        time.sleep(1.0)
        after = read_host()  # before the child is waited for: its time is not ours
    finally:
        child.kill()
        child.wait()
    cpus = psutil.cpu_count() or 1
    # One spinning process takes up to 1 / cpus of the machine; allow for a crowded host.
    assert host_load(before, after)["host_other_cpu_pct"] > 100 / cpus / 4


@pytest.mark.parametrize(("other", "steal", "load", "busy"), [
    (5.0, 0.0, 0.3, False), (40.0, 0.0, 0.3, True), (5.0, 15.0, 0.3, True),
    # a high load average with an idle probe: ollabench's own previous bench, not a busy host
    (0.5, 0.0, 1.8, False), (None, None, None, False)])
def test_a_busy_host_is_warned_about_before_the_first_call(other, steal, load, busy) -> None:
    start = {"host_other_cpu_pct": other, "host_load_1m": load, "host_steal_pct": steal,
             "cpu_count": 2.0}
    warning = busy_warning(start)
    assert (warning is not None) == busy
    if busy:
        assert f"other processes using {other}% of the CPU, steal {steal}%" in warning
        assert f"load {load} on 2 CPU(s)" in warning


def test_an_outlier_on_a_busy_host_gets_that_cause_with_its_numbers() -> None:
    runs = pd.DataFrame({"load_ms": 5.0, "output_tokens": 100.0,
                         "host_other_cpu_pct": [2.0, 3.0, 2.5, 64.0, 1.0, 2.0],
                         "host_steal_pct": [0.0, 0.0, 0.0, 0.0, 0.0, 14.0],
                         "host_load_1m": [0.5, 0.5, 0.5, 3.1, 0.5, 0.6]},
                        index=pd.RangeIndex(1, 7, name="run"))
    table = cause_table(runs)
    assert list(table.index[table["host_busy"]]) == [4, 6]  # other CPU, then steal
    outlier = {"causes": ["host_busy"], **table.loc[4].to_dict()}
    assert cause_text(outlier) == ("host busy: load 3.1, other processes 64.0% of the CPU "
                                   "against 2.2% typical, steal 0.0%")


def test_runs_without_host_fields_have_no_host_cause() -> None:
    runs = pd.DataFrame({"load_ms": [5.0, 6.0], "output_tokens": [10.0, 10.0]})
    assert not cause_table(runs)["host_busy"].any()
    assert np.isnan(cause_table(runs)["host_other_cpu_pct"]).all()


def test_the_cpu_probe_counts_the_time_its_process_lost_the_cpu() -> None:
    """The probe is wall time, not CPU time: a stretch in which the process cannot run (here
    stopped for 60 ms by a child, as a busy core or the hypervisor would hold it) shows in
    the probe that spans it, on a busy host as on an idle one."""
    hold = ("os.kill(os.getppid(), signal.SIGSTOP); time.sleep(0.06); "
            "os.kill(os.getppid(), signal.SIGCONT); time.sleep(0.02); ")
    # twice: a stop that lands between two probes (a few microseconds of 2 ms) hides once
    child = subprocess.Popen([sys.executable, "-c",
                              "import os, signal, time; time.sleep(0.05); " + hold * 2])
    probes = []
    try:
        deadline = time.monotonic() + 10.0
        while child.poll() is None and time.monotonic() < deadline:
            probes.append(cpu_probe_ms())
    finally:
        child.wait()
    assert max(probes) >= 55.0
