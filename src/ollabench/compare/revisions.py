"""Files of a git revision or DVC experiment, read through DVC's API (local cache or DVC
remote, never a checkout), and one arm's raw records from them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from ollabench.errors import CompareError
from ollabench.paths import CALLS_FILE, ENV_FILE, RAW_DIR, in_repo
from ollabench.records.schema import SCHEMA_VERSION, CallRecord, RecordError, read_records

T = TypeVar("T")


class Revision:
    """The files of one git revision or DVC experiment, read through DVC's file system: git
    files from the commit, DVC outputs from the local cache or else the DVC remote."""

    def __init__(self, root: Path, rev: str, name: str | None = None) -> None:
        """`name`: how messages call the revision (an experiment's name for its commit);
        `rev` by default."""
        from dvc.api import DVCFileSystem
        from dvc.repo import Repo
        from dvc.scm import RevError, resolve_rev

        self.rev = name or rev
        with Repo(str(root)) as repo:
            try:
                self.sha: str = resolve_rev(repo.scm, rev)
            except RevError:
                raise CompareError(
                    f"unknown revision '{rev}': not a commit, branch, tag or DVC experiment of "
                    f"this repository (a shared experiment needs `dvc exp pull origin {rev}`)"
                ) from None
        self.fs = DVCFileSystem(str(root), rev=self.sha)

    @classmethod
    def on(cls, fs: Any, sha: str, name: str) -> Revision:
        """A revision read through a file system someone else opened (see Revisions)."""
        revision = cls.__new__(cls)
        revision.rev, revision.sha, revision.fs = name, sha, fs
        return revision

    def has(self, path: str) -> bool:
        """True when the revision records the file, whether or not its data is at hand."""
        from dvc_data.index.index import DataIndexError

        if self.fs.exists(path):
            return True
        try:
            self.fs.ls(str(PurePosixPath(path).parent))
        except FileNotFoundError:
            return False
        except DataIndexError:
            return True  # a DVC-tracked folder whose listing is neither cached nor pushed
        return False

    def checksum(self, path: str) -> str | None:
        """DVC's hash of a tracked file, known without its data (None for a file in git or
        when unknown): two revisions with the same hash hold the same measurement."""
        from dvc_data.index.index import DataIndexError

        try:
            value = self.fs.info(path).get("md5")
        except (FileNotFoundError, DataIndexError):
            return None
        return str(value) if value else None

    def read_text(self, path: str) -> str:
        return self._fetch(path, lambda: self.fs.read_text(path, encoding="utf-8"))

    def download(self, path: str, dest: Path) -> Path:
        """Copy one file to a local path (raw files can be large)."""
        self._fetch(path, lambda: self.fs.get_file(path, str(dest)))
        return dest

    def _fetch(self, path: str, action: Callable[[], T]) -> T:
        from dvc_data.index.index import DataIndexError

        if not self.has(path):
            raise CompareError(f"revision '{self.rev}' has no {path}")
        try:
            return action()
        except (FileNotFoundError, DataIndexError):
            raise CompareError(
                f"revision '{self.rev}': {path} is neither in the local DVC cache nor on a "
                f"DVC remote; fetch it with `dvc pull` (a commit) or `dvc exp pull origin "
                f"{self.rev}` (an experiment)") from None


class Revisions:
    """Many revisions of one repository, read through one open DVC repository switched from
    commit to commit (as `dvc plots diff` reads them): opening the repository again for each
    revision costs several times more than reading its data."""

    def __init__(self, root: Path) -> None:
        from dvc.repo import Repo

        self._repo = Repo(str(root))

    def __enter__(self) -> Revisions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._repo.close()

    @contextmanager
    def at(self, sha: str, name: str) -> Iterator[Revision | None]:
        """The revision at commit `sha`, or None when that commit is no DVC repository
        (a commit from before `dvc init`)."""
        from dvc.exceptions import NotDvcRepoError

        with ExitStack() as stack:
            try:
                stack.enter_context(self._repo.switch(sha))
            except NotDvcRepoError:
                yield None
                return
            # paths are the repository's, whatever folder the command runs in
            self._repo.fs.chdir(self._repo.root_dir)
            yield Revision.on(self._repo.dvcfs, sha, name)


@dataclass(frozen=True)
class Side:
    """One arm of one revision: its raw records and the env.json written beside them."""

    rev: str
    sha: str
    arm: str
    env: dict[str, Any]
    records: list[CallRecord]

    def measured(self) -> list[CallRecord]:
        """The calls the statistics use: measured and without an error."""
        return [r for r in self.records if r.phase == "measured" and r.error is None]


RAW_CALLS = str(in_repo(RAW_DIR / CALLS_FILE))
RAW_ENV = str(in_repo(RAW_DIR / ENV_FILE))


def load_side(root: Path, rev: str, arm: str) -> Side:
    """Read a revision's raw records and provenance; keep the records of one arm."""
    revision = Revision(root, rev)
    records, env = read_raw(revision)
    mine = [r for r in records if r.arm == arm]
    if not mine:
        raise CompareError(f"revision '{rev}' has no calls in the {arm} arm")
    return Side(rev, revision.sha, arm, env, mine)


def read_raw(revision: Revision) -> tuple[list[CallRecord], dict[str, Any]]:
    """Every raw record of a revision and its env.json (`has(RAW_CALLS)` tells beforehand
    whether the revision ran the bench stage at all)."""
    rev = revision.rev
    if not revision.has(RAW_CALLS):
        raise CompareError(f"revision '{rev}' has no raw data ({RAW_CALLS}): its bench stage "
                           "never ran there")
    with tempfile.TemporaryDirectory(prefix="ollabench-") as tmp:
        local = revision.download(RAW_CALLS, Path(tmp) / CALLS_FILE)
        try:
            records = read_records(local)
        except RecordError as exc:
            raise CompareError(_record_problem(rev, local, exc)) from None
    try:
        env = json.loads(revision.read_text(RAW_ENV))
    except json.JSONDecodeError as exc:
        raise CompareError(f"revision '{rev}': {RAW_ENV} is not JSON ({exc})") from None
    if not isinstance(env, dict):
        raise CompareError(f"revision '{rev}': {RAW_ENV} is not a JSON object")
    return records, env


def _record_problem(rev: str, path: Path, exc: RecordError) -> str:
    """Name a record-format mismatch as such: the fix is a re-run, not a repair."""
    version = _declared_version(path)
    if version == SCHEMA_VERSION:
        return f"revision '{rev}': {exc}"
    age = "a newer" if isinstance(version, int) and version > SCHEMA_VERSION else "an older"
    fix = ("upgrade ollabench" if age == "a newer"
           else "re-run that experiment with this ollabench")
    return (f"revision '{rev}' was recorded in {age} record format (version {version!r}; this "
            f"ollabench reads version {SCHEMA_VERSION}): {fix}")


def _declared_version(path: Path) -> Any:
    """schema_version of the first record (None when it has none); the current version when
    the line is not a JSON object, so that the reader's own message is kept."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line).get("schema_version")
                except (json.JSONDecodeError, AttributeError):
                    return SCHEMA_VERSION
    return SCHEMA_VERSION
