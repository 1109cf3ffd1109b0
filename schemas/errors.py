"""Typed errors shared by every package. Library code raises these; only CLIs print and exit."""


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that escaped the libraries (a path we could not read or write)."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


class CuratorError(Exception):
    """Base class: a problem with the user's input or the store, stated in one line."""


class SchemaError(CuratorError):
    """A table or row does not match its schema (names the column and the problem)."""


class RefError(CuratorError):
    """A set / table reference is malformed or does not exist."""


class StoreError(CuratorError):
    """The store is missing a table, a version, or cannot be opened."""


class ModelError(CuratorError):
    """A model is unknown, cannot be loaded, or is used for something it cannot do."""


class MixedModelsError(ModelError):
    """Vectors of two different models were combined in one operation."""


class AudioError(CuratorError):
    """An audio file is missing, empty, corrupt, or not audio."""


class ParameterError(CuratorError):
    """A parameter is out of range (e.g. a threshold outside [-1, 1])."""


class TrainingError(CuratorError):
    """Training cannot continue (NaN loss, mismatched checkpoint, ...)."""


class QueryError(CuratorError):
    """DuckDB rejected a SQL statement or filter (the message says which and where)."""


class Interrupted(CuratorError):
    """Ctrl-C or SIGTERM stopped a run cleanly; the message says what was kept and what to run next."""
