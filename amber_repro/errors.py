"""Errors that mean "bad input or a run that cannot go on": the CLI prints them without a
traceback."""


class AmberError(Exception):
    """Base class; the message names what is wrong and where."""


class DataError(AmberError, ValueError):
    """Input data that cannot be used as the recipe says (file, row and column named)."""


class NonFiniteLossError(AmberError):
    """A NaN or infinite loss, weights or optimizer state; no checkpoint of it is written."""


class StopRequested(AmberError):
    """SIGTERM (a scheduler's time limit or preemption) or SIGINT arrived; a checkpoint was saved.

    Exit code 128 + the signal's number, as a shell reports a process that signal ended."""

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


class CheckpointError(AmberError):
    """The checkpoint key cannot be used, or a verified checkpoint could not be loaded."""


class ConfigError(AmberError, ValueError):
    """Settings that cannot work together (say a batch that does not split over the processes)."""


class DiskFullError(AmberError, OSError):
    """A write found no space; the message names the file system, the file and the sizes."""
