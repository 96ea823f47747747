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
        """(indices, scores) of the top k of the backend's output: those of ``top_indices(self.scores(y), k)``."""
        y = y.reshape(-1)
        if not self._raw_order or y.dtype.itemsize != 1:
            s = self.scores(y)
            idx = top_indices(s, k)
            return idx.tolist(), s[idx].tolist()
        k = max(1, min(int(k), y.size))
        key = y.view(np.uint8) ^ (0xFF ^ self._flip)  # descending raw value -> ascending uint8 key
        idx = np.array([np.argmin(key)]) if k == 1 else np.argsort(key, kind="stable")[:k]
        return idx.tolist(), self._table[y.view(np.uint8)[idx]].tolist()


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
