"""What the host was doing while a call ran: the machine's noise on the record.

On shared 2-vCPU machines an outlier is often another process, or the hypervisor taking the
CPU (steal time), not the model. Each call is bracketed by two readings of the kernel's CPU
counters (psutil over /proc), taken outside the backend's timed region so they cost the
measurement nothing; the difference says how much CPU time other processes used and how much
the hypervisor stole while the call ran. docs/metrics.md defines the fields.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import psutil

# Before the first call: other processes using more than this share of the machine's CPU,
# or the hypervisor stealing more than this share, is a busy host. The load average is not a
# trigger: it decays over minutes and counts ollabench's own engine threads, so right after
# a previous bench (a tune's last candidate, a queued experiment) it reads busy on an idle host.
BUSY_OTHER_CPU_PCT = 25.0
BUSY_STEAL_PCT = 10.0
IDLE_PROBE_S = 1.0
# The CPU probe (cpu_probe_ms): the same small multiply of two float32 vectors that stay in
# the core's cache, repeated; about 2 ms on an idle 2-vCPU AMD EPYC. numpy's own SIMD loop,
# one thread, written into a preallocated array: no BLAS threads, no allocation, no I/O.
PROBE_ELEMENTS = 8192  # 32 KiB per vector
PROBE_REPEATS = 1500


@dataclass(frozen=True)
class HostReading:
    """The kernel's cumulative CPU counters at one instant (seconds of CPU time)."""

    at_s: float  # time.monotonic()
    busy_s: float  # every CPU's non-idle, non-steal time, all processes
    steal_s: float
    own_s: float  # this process and its waited-for children
    load_1m: float | None


def read_host() -> HostReading:
    cpu = psutil.cpu_times()
    busy = cpu.user + cpu.system + getattr(cpu, "nice", 0.0) + getattr(cpu, "irq", 0.0) \
        + getattr(cpu, "softirq", 0.0)
    own = psutil.Process().cpu_times()
    return HostReading(
        at_s=time.monotonic(), busy_s=busy, steal_s=getattr(cpu, "steal", 0.0),
        own_s=own.user + own.system + own.children_user + own.children_system,
        load_1m=_load_1m())


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_mhz() -> float | None:
    """The mean current clock over the CPUs, where the kernel exposes it (on many VMs it is
    the nominal clock, constant)."""
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, FileNotFoundError):
        return None
    return round(freq.current, 1) if freq and freq.current else None


@functools.cache
def _probe_vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.ones(PROBE_ELEMENTS, dtype=np.float32),
            np.full(PROBE_ELEMENTS, 1.0001, dtype=np.float32),
            np.empty(PROBE_ELEMENTS, dtype=np.float32))


def cpu_probe_ms() -> float:
    """Wall time (ms, monotonic clock) of a fixed CPU workload: the same work every call, so
    its time says how fast one core of this machine ran just before a call (another
    process, the hypervisor, the clock). Raw data for the analysis of noise
    (docs/statistics.md); no estimator adjusts for it."""
    a, b, out = _probe_vectors()
    start_ns = time.perf_counter_ns()
    for _ in range(PROBE_REPEATS):
        np.multiply(a, b, out=out)
    return round((time.perf_counter_ns() - start_ns) / 1e6, 4)


def host_load(before: HostReading, after: HostReading) -> dict[str, float | None]:
    """The record's host fields for a call between two readings: CPU time used by other
    processes and stolen by the hypervisor, each as a percentage of the machine's capacity
    (wall time x logical CPUs) over the call; the load average as the call started."""
    capacity_s = (after.at_s - before.at_s) * (psutil.cpu_count() or 1)
    fields: dict[str, float | None] = {"host_load_1m": before.load_1m,
                                       "host_other_cpu_pct": None, "host_steal_pct": None,
                                       "cpu_mhz": cpu_mhz()}
    if capacity_s > 0:
        other_s = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
        fields["host_other_cpu_pct"] = round(_percent(max(other_s, 0.0), capacity_s), 1)
        fields["host_steal_pct"] = round(_percent(after.steal_s - before.steal_s,
                                                  capacity_s), 1)
    return fields


def _percent(part_s: float, whole_s: float) -> float:
    return min(100.0, 100.0 * part_s / whole_s)


def host_at_start(probe_s: float = IDLE_PROBE_S) -> dict[str, float | None]:
    """The host before the first call, over `probe_s` of this process idling: what other
    processes and the hypervisor take from a machine about to be measured."""
    before = read_host()
    time.sleep(probe_s)
    return host_load(before, read_host()) | {"cpu_count": float(psutil.cpu_count() or 1)}


def busy_warning(start: dict[str, float | None]) -> str | None:
    """A one-line warning when the host is busy before the first call, else None."""
    cpus = start["cpu_count"] or 1.0
    other, steal = start["host_other_cpu_pct"], start["host_steal_pct"]
    busy = (other is not None and other > BUSY_OTHER_CPU_PCT) \
        or (steal is not None and steal > BUSY_STEAL_PCT)
    if not busy:
        return None
    return (f"host busy before the first call: other processes using {other}% of the CPU, "
            f"steal {steal}%, load {start['host_load_1m']} on {cpus:.0f} CPU(s); "
            f"timings will be noisier (each call records the host's load)")
