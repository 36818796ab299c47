"""Every error a user can cause or fix: one base class, one line on stderr, one exit status.

The CLI catches `OllabenchError` alone and prints `ollabench: error: <message>`; anything
else is a bug and keeps its traceback. This module imports nothing from ollabench, so any
module can raise these without an import cycle.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 1


class OllabenchError(Exception):
    """A problem the user can act on; the message names the file, key or value at fault."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(OllabenchError, ValueError):
    """Invalid configuration: the message names the key and what is allowed.

    Also a ValueError so that pydantic validators can raise it and keep its message.
    """


class WorkloadError(OllabenchError):
    """A workload folder the agent cannot read."""


class BackendUnavailable(OllabenchError):
    """The backend cannot run at all (server down, model missing): one line with the fix."""


class RecordError(OllabenchError):
    """A raw file that does not follow the record contract (file, line and field named)."""


class AggregateError(OllabenchError):
    """Raw records the statistics cannot be computed from."""


class ReportError(OllabenchError):
    """Aggregate outputs or provenance the report cannot be written from."""


class CompareError(OllabenchError):
    """Revisions or experiments that cannot be compared."""


class HistoryError(OllabenchError):
    """A history that cannot be built: unknown revision, a range without data, raw data
    that is neither cached nor on a remote."""


class SweepError(OllabenchError):
    """A sweep that cannot be started (remote, name or overrides at fault)."""


class TuneError(OllabenchError):
    """A measured candidate that could not be recorded (or pushed) as a DVC experiment."""

    exit_code = EXIT_INCOMPLETE


class BenchIncomplete(OllabenchError):
    """Some measured call never succeeded; everything else was still written."""

    exit_code = EXIT_INCOMPLETE


class JobFailed(OllabenchError):
    """A sweep job whose experiment did not run to the end."""

    exit_code = EXIT_INCOMPLETE
