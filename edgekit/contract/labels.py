"""Labels files: one label per line, read into a tuple that remembers its file."""

from __future__ import annotations

from pathlib import Path

from edgekit.contract.schema import MAX_CONTRACT_BYTES
from edgekit.errors import InputFileError
from edgekit.fileio import check_regular_file, read_capped


class Labels(tuple):
    """Labels read from a file: a tuple of strings that remembers the file, so that errors can name it."""

    path: str | None

    def __new__(cls, labels=(), path=None):
        self = super().__new__(cls, labels)
        self.path = None if path is None else str(path)
        return self


def read_labels(path: str | Path) -> Labels:
    """One label per line; blank and whitespace-only lines are ignored. Accepts 'index label' lines too.
    The result remembers the file (``.path``), so a count that does not fit the model names it."""
    p = Path(path)
    check_regular_file(p, "labels file", allow_empty=True)
    raw = read_capped(p, "labels file", MAX_CONTRACT_BYTES)
    try:
        text = raw.decode("utf-8-sig")  # a BOM from Windows Notepad is not part of the first label
    except UnicodeDecodeError:
        raise InputFileError(p, "labels file is not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputFileError(p, "labels file is empty (no non-blank lines)")
    split = [ln.split(maxsplit=1) for ln in lines]
    if all(len(s) == 2 and s[0].isdigit() for s in split) and [int(s[0]) for s in split] == list(range(len(split))):
        return Labels((s[1] for s in split), p)  # Teachable Machine style "0 Cat"
    return Labels(lines, p)
