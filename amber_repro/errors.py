"""Errors that mean "bad input or a run that cannot go on": the CLI prints them without a
traceback."""


class AmberError(Exception):
    """Base class; the message names what is wrong and where."""


class DataError(AmberError, ValueError):
    """Input data that cannot be used as the recipe says (file, row and column named)."""


class NonFiniteLossError(AmberError):
    """A NaN or infinite loss; the last good checkpoint is kept."""


class StopRequested(AmberError):
    """SIGTERM arrived (a scheduler's time limit or preemption); a checkpoint was saved."""

    exit_code = 143


class ConfigError(AmberError, ValueError):
    """Settings that cannot work together (say a batch that does not split over the processes)."""
