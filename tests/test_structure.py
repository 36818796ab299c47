"""The code's shape: no import cycle, no oversized module, argparse only in the CLI, and
dvc.yaml listing exactly the code each stage runs (so a code change reruns what it must)."""

from __future__ import annotations

import ast
import inspect
import shlex
import textwrap
from collections.abc import Iterable
from functools import cache
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from ollabench.cli import build_parser
from tests.helpers.project import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "ollabench"
MAX_MODULE_LINES = 420  # "about 400": a module past this has a seam to split along
CLI_PACKAGE = "ollabench.cli"


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(node: ast.AST, module: str) -> set[str]:
    """The package's modules that `node` imports (at any depth inside it)."""
    names: set[str] = set()
    package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
    for item in ast.walk(node):
        if isinstance(item, ast.Import):
            names.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - item.level + 1]
                                + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in item.names)
            names.update(lazy_source(base, alias.name) for alias in item.names)
    return {name for name in names if name in modules()}


def lazy_source(package: str, name: str) -> str:
    """The module a facade loads on first use of `name` (PEP 562 `_LAZY`), or ''."""
    if package not in modules() or modules()[package].name != "__init__.py":
        return ""
    return getattr(import_module(package), "_LAZY", {}).get(name, "")


def top_level(tree: ast.Module) -> ast.Module:
    """The statements that run at import time (functions and classes left out)."""
    kept = [s for s in tree.body
            if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return ast.Module(body=kept, type_ignores=[])


@cache
def tree(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(encoding="utf-8"))


def imports_of(module: str, at_import_time: bool) -> set[str]:
    node = top_level(tree(module)) if at_import_time else tree(module)
    return imported(node, module) - {module}


def closure(start: Iterable[str]) -> set[str]:
    """Modules reached from `start`: CLI modules through what they import when loaded, every
    other module through all its imports (lazy ones included: they run when it works)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports_of(module, at_import_time=module.startswith(CLI_PACKAGE)))
        parent = module.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a/b/__init__
        if parent:
            todo.append(parent)
    return seen


def test_no_import_cycle() -> None:
    graph = {m: imports_of(m, at_import_time=False) for m in modules()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = [*path[path.index(target):], target] if target in path else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_is_oversized() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_only_the_cli_parses_arguments() -> None:
    users = {m for m in modules() if not m.startswith(CLI_PACKAGE)
             and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in
                     {a.name for a in n.names} | {getattr(n, "module", None)}
                     for n in ast.walk(tree(m)))}
    assert users == set()


def stage_modules(command: str) -> set[str]:
    """What `ollabench <subcommand> ...` loads: the CLI and the handler's imports, closed."""
    argv = shlex.split(command)
    assert argv[0] == "ollabench", command
    handler = build_parser().parse_args(argv[1:]).func
    source = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    entry = {CLI_PACKAGE, handler.__module__}
    return closure(entry | imported(source, handler.__module__))


def listed(path: str) -> set[str]:
    """The modules a dvc.yaml dependency path covers (a file, or every module below a folder)."""
    target = (ROOT / path).resolve()
    return {m for m, p in modules().items() if p == target or target in p.parents}


@pytest.mark.parametrize("stage", ["bench", "judge", "aggregate", "report"])
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(stage: str) -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    runs = stage_modules(spec["cmd"])
    code_deps = [d for d in spec["deps"] if d.startswith("src/")]
    covered = set().union(*(listed(d) for d in code_deps))
    assert sorted(runs - covered) == [], f"{stage}: add these modules to its deps in dvc.yaml"
    needless = {d: sorted(listed(d) - runs) for d in code_deps if listed(d) - runs}
    assert needless == {}, f"{stage}: dvc.yaml lists code the stage never loads"


def _leaves(tree: dict, prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_setting_the_bench_reads_reruns_it() -> None:
    """A key of params.yaml that no bench `params` entry covers (itself or a group above it)
    would let `dvc repro` keep a bench run under other settings. Only the judge group is the
    bench's business of no one: the judge stage scores after it (and the journal key leaves
    it out, bench/loop.py config_key)."""
    bench = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["bench"]["params"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    uncovered = [key for key in _leaves(params) if not key.startswith("judge")
                 and not any(key == p or key.startswith(f"{p}.") for p in bench)]
    assert uncovered == [], "add these keys to the bench stage's params in dvc.yaml"
