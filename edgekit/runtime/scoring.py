"""A model's raw output -> one float32 score per class -> the top k, with every per-model constant computed once.

The results are those of the plain formulas, bit for bit: ``(y.astype(float32) - zero_point) * scale`` (a 256-entry
table for 8-bit outputs), then softmax or sigmoid per the contract, and the top k of
``np.argsort(-scores, kind="stable")`` (ties go to the lower index)."""

from __future__ import annotations

import numpy as np

from edgekit.contract import OutputKind, class_scores
from edgekit.errors import InputFileError
from edgekit.runtime.tensors import TensorInfo

#: Above this many classes the top k come from a partition, not a full sort (same order, ties included).
_SORT_ALL_UP_TO = 2048


class Scorer:
    def __init__(self, output: TensorInfo, kind: OutputKind | str, path=None):
        self.kind = OutputKind(kind)
        self._path = path
        self._scale = output.scale if output.quantized else 0.0
        self._zp = output.zero_point
        self._table: np.ndarray | None = None
        if self._scale and output.dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            raw = np.arange(256, dtype=np.uint8).view(output.dtype)  # indexed by the output's bytes
            with np.errstate(all="ignore"):
                table = (raw.astype(np.float32) - self._zp) * self._scale
            if np.isfinite(table).all():
                self._table = table  # then every score is finite, and stays so through softmax or sigmoid
        # 8-bit probabilities whose scores rise strictly with the raw value: the top k can be found on the raw bytes
        # (an order-preserving uint8 key, sorted by radix), in the very order the float scores would give
        self._raw_order = False
        if self._table is not None and self.kind == OutputKind.PROBABILITIES:
            self._flip = 0x80 if output.dtype == np.dtype(np.int8) else 0  # int8 -> uint8, order kept
            by_value = self._table[np.arange(256, dtype=np.uint8) ^ self._flip]  # the scores of raw 0..255 (signed)
            self._raw_order = bool((np.diff(by_value) > 0).all())
            self._table_list = self._table.tolist()  # the score of each raw byte (as uint8), as Python floats
            self._by_value = by_value.tolist()  # the score of each raw value + 128 (int8 outputs, flipped)

    def scores(self, y: np.ndarray) -> np.ndarray:
        """Float32 scores for each class from the backend's output (a new array); an error on NaN or infinity."""
        y = y.reshape(-1)
        table = self._table
        if table is not None and y.dtype.itemsize == 1:
            y = table[y.view(np.uint8)]
        elif self._scale:
            y = (y.astype(np.float32) - self._zp) * self._scale
        else:
            y = y.astype(np.float32, copy=False)
        if self.kind != OutputKind.PROBABILITIES:
            with np.errstate(all="ignore"):
                y = class_scores(y, self.kind)
        if table is None and not np.isfinite(y).all():  # NaN would sort anywhere, and is not JSON
            raise InputFileError(self._path or "model", "inference gave NaN or infinite scores; the model is broken")
        return y


    def top(self, y: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """(indices, scores) of the top k of the backend's output: those of ``top_indices(self.scores(y), k)``.

        Right after inference every numpy call runs on cold caches (each costs several times its warm time), so
        the common cases take one sort and plain Python: 8-bit probabilities are ordered on their raw bytes, and
        float probabilities are sorted once, with finiteness read off the two ends of that order."""
        y = y.reshape(-1)
        n = y.size
        if self._raw_order and y.dtype.itemsize == 1:
            raw = y.view(np.uint8)
            if self._flip:
                raw = raw ^ self._flip  # int8 -> uint8 with the order kept
                values = self._by_value
            else:
                values = self._table_list
            idx = _descending(raw, max(1, min(int(k), n)))
            return idx, [values[raw[i]] for i in idx]
        if (self.kind == OutputKind.PROBABILITIES and self._scale == 0.0 and y.dtype == np.float32
                and n <= _SORT_ALL_UP_TO):
            k = max(1, min(int(k), n))
            order = _ascending_reversed(y)  # ascending order of y[::-1]: NaN last
            lo, hi = y[n - 1 - order[0]], y[n - 1 - order[-1]]
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise InputFileError(self._path or "model",
                                     "inference gave NaN or infinite scores; the model is broken")
            idx = [n - 1 - i for i in order[: n - k - 1: -1].tolist()] if k < n else \
                [n - 1 - i for i in order[::-1].tolist()]
            return idx, [float(y[i]) for i in idx]
        s = self.scores(y)
        idx = top_indices(s, k)
        return idx.tolist(), s[idx].tolist()


def _descending(raw: np.ndarray, k: int) -> list[int]:
    """The indices of the k largest uint8 values, largest first, ties to the lower index (the order of
    ``np.argsort(-raw.astype(int), kind="stable")[:k]``)."""
    n = raw.size
    if k == 1:
        return [int(np.argmax(raw))]  # the first of equal maxima
    order = _ascending_reversed(raw)
    return [n - 1 - i for i in order[: n - k - 1: -1].tolist()] if k < n else [n - 1 - i for i in order[::-1].tolist()]


def _ascending_reversed(v: np.ndarray) -> np.ndarray:
    """The stable ascending order of ``v[::-1]``. Read backwards and mapped back (``n - 1 - i``) it is the
    descending order of ``v`` with ties to the lower index, without negating ``v`` first."""
    return np.argsort(v[::-1], kind="stable")


def top_indices(s: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-s, kind="stable")[:k]`` for finite scores, without sorting them all."""
    n = s.size
    k = max(1, min(int(k), n))
    if k == 1:
        return np.array([np.argmax(s)])  # the first of equal maxima, as the stable sort
    if n <= _SORT_ALL_UP_TO:
        return np.argsort(-s, kind="stable")[:k]
    t = s[np.argpartition(s, n - k)[n - k:]].min()  # the k-th largest score
    above = np.flatnonzero(s > t)  # fewer than k
    ties = np.flatnonzero(s == t)[: k - above.size]  # the lowest indices among those equal to it
    idx = np.concatenate((above, ties))
    return idx[np.argsort(-s[idx], kind="stable")]
