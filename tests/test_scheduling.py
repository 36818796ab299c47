"""The workers' module order (tests/helpers/scheduling.py) names modules that exist, and
every module that reads the shared real-model bench runs on one worker."""

from __future__ import annotations

from tests.helpers.project import ROOT
from tests.helpers.scheduling import LONGEST_FIRST, SHARED_WORKER, _LongestFirst


def test_the_named_modules_exist() -> None:
    named = {*LONGEST_FIRST, *SHARED_WORKER, *SHARED_WORKER.values()}
    assert [m for m in sorted(named) if not (ROOT / m).is_file()] == []


def test_every_reader_of_the_embedded_run_shares_one_worker() -> None:
    readers = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("test_*.py")
               if "embedded_run" in path.read_text(encoding="utf-8")}
    readers.discard("tests/test_scheduling.py")
    assert {SHARED_WORKER.get(m, m) for m in readers} == {"tests/test_bench.py"}


def test_the_longest_modules_are_taken_first_then_the_queue_order() -> None:
    queue = _LongestFirst((name, {}) for name in ("tests/a.py", LONGEST_FIRST[1], "tests/b.py",
                                                  LONGEST_FIRST[0]))
    taken = [queue.popitem(last=False)[0] for _ in range(4)]
    assert taken == [LONGEST_FIRST[0], LONGEST_FIRST[1], "tests/a.py", "tests/b.py"]
