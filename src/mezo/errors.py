"""Every way a run ends early, with its exit code: one type per outcome, caught once by run.main.

Each prints its one-line message (naming the flag or the file:line at fault) and exits with
``exit_code``; none of them writes a record to `log` (RecordNotAppended: the record was saved
elsewhere).
"""
import signal


class RunError(Exception):
    """A run that stops with a one-line message and a non-zero exit code."""
    exit_code = 1


class UsageError(RunError, ValueError):
    """Bad input (a flag, a file, a model that cannot be loaded): exit 2, before any expensive work."""
    exit_code = 2


class ModelSourceError(UsageError):
    """The model named by --model_name_or_path cannot be loaded (e.g. the hub is unreachable)."""


class TrainingDiverged(RunError):
    """Too many MeZO steps skipped for a non-finite loss (--zo_max_skipped_steps): exit 3, no record."""
    exit_code = 3


class RanksDiverged(RunError):
    """Data-parallel MeZO replicas drifted apart (--zo_check_sync_steps): exit 3, no record."""
    exit_code = 3


class RecordNotAppended(RunError, OSError):
    """The log could not take a finished run's record; it was saved elsewhere: exit 4."""
    exit_code = 4


class Preempted(RunError):
    """Training stopped by a signal after writing a checkpoint: exit 128 + signal, no record."""

    def __init__(self, signum: int, step: int, path):
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if path:
            msg = (f"{name} received: stopped after step {step}, checkpoint {path} written; continue with "
                   f"--resume_from_checkpoint auto")
        else:
            msg = (f"{name} received at the last step ({step}), which is never checkpointed; "
                   f"--resume_from_checkpoint auto redoes the steps since the latest checkpoint")
        super().__init__(msg)


def one_line(message) -> str:
    """A message as exactly one line: control characters from user input (a flag value with a newline,
    a carriage return) are shown escaped, as repr would."""
    text = str(message)
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in text)
