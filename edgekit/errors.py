"""Typed errors. Every user-facing failure is an EdgekitError with a one-line message."""

from __future__ import annotations


class EdgekitError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""

    exit_code = 2


class InputFileError(EdgekitError):
    """A file or folder given by the user is missing, empty or not what it should be."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ContractError(EdgekitError):
    """A model contract is malformed or inconsistent."""


class MissingDependencyError(EdgekitError):
    """An optional dependency (an extra) is not installed."""


class OutputExistsError(EdgekitError):
    """An output file exists and --force was not given."""

    def __init__(self, path):
        self.path = str(path)
        super().__init__(f"{self.path}: already exists (use --force to overwrite)")


class VerificationError(EdgekitError):
    """An exported artifact does not match its source model closely enough."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (or its type), for one-line errors."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else exc.__class__.__name__)[:limit]
