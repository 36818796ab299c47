"""The schedule: arm order, warm-ups after every switch, one slot per call."""

from __future__ import annotations

import itertools
from typing import Any

from ollabench.bench.schedule import arm_order, plan
from tests.helpers.project import AGENT_STEPS, tiny_config


def _arms(slots) -> str:
    return "".join("C" if s.arm == "control" else "T" for s in slots if s.stage == "analysis")


def test_abba_alternates_and_warms_up_after_each_switch(raw_config: dict[str, Any]) -> None:
    config = tiny_config(raw_config, runs=4, warmup=1, order="abba")
    slots = plan(config.run, AGENT_STEPS)
    assert _arms(slots) == "CTTCCTTC"
    stages = [s.stage for s in slots]
    # C: w a r | T: w a r, a r | C: w a r, a r | T: w a r, a r | C: w a r
    assert stages.count("warmup") == 5
    assert [s.seq for s in slots] == list(range(1, len(slots) + 1))
    for previous, current in itertools.pairwise(slots):
        if current.arm != previous.arm:
            assert current.stage == "warmup" and current.phase == "warmup"


def test_every_run_has_both_arms_and_both_stages(raw_config: dict[str, Any]) -> None:
    for order in ("abba", "random", "sequential"):
        config = tiny_config(raw_config, runs=5, order=order)
        measured = [(s.run, s.arm, s.stage) for s in plan(config.run, AGENT_STEPS)
                    if s.phase == "measured"]
        assert len(measured) == len(set(measured)) == 5 * 2 * 2


def test_sequential_switches_arm_once(raw_config: dict[str, Any]) -> None:
    config = tiny_config(raw_config, runs=3, order="sequential", warmup=2)
    slots = plan(config.run, AGENT_STEPS)
    assert _arms(slots) == "CCCTTT"
    assert [s.stage for s in slots].count("warmup") == 4


def test_random_order_is_seeded(raw_config: dict[str, Any]) -> None:
    one = arm_order(tiny_config(raw_config, runs=8, order="random", order_seed=1).run)
    same = arm_order(tiny_config(raw_config, runs=8, order="random", order_seed=1).run)
    other = arm_order(tiny_config(raw_config, runs=8, order="random", order_seed=2).run)
    assert one == same != other


def test_no_warmup_when_disabled(raw_config: dict[str, Any]) -> None:
    config = tiny_config(raw_config, runs=2, warmup=0)
    assert all(s.phase == "measured" for s in plan(config.run, AGENT_STEPS))
