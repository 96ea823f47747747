"""Several sources in one process: one capture thread and one frame loop per source, so that a source that
stalls or drops never holds up the others. They share one interpreter (its calls serialized by a lock) or
each has its own (``classifiers_for``). One source runs on the calling thread, as it always did."""

from __future__ import annotations

import signal
import threading

import numpy as np

from edgekit.errors import EdgekitError, first_line


def classifiers_for(clf, count: int) -> tuple[list, list]:
    """(one classifier per source, one lock per source or None): a single Classifier is shared by every source
    behind one lock; a list must hold one per source, each used by its own thread without a lock."""
    if isinstance(clf, (list, tuple)):
        if len(clf) != count:
            raise EdgekitError(f"expected one classifier per source ({count}), got {len(clf)}")
        return list(clf), [None] * count
    lock = threading.Lock() if count > 1 else None
    return [clf] * count, [lock] * count


class StopOnSignals:
    """SIGTERM (a service manager stopping us) ends the run like Ctrl-C: the loops unwind through their
    ``finally`` and close the cameras, then the server, the broker connection and the video file."""

    def __init__(self):
        self._saved: dict = {}
        self.signal: str | None = None
        self.loops: list = []  # told to stop as well: C code that runs Python (an import) may swallow the raise

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signal = signal.Signals(signum).name
        for loop in self.loops:
            loop.stopping = True
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


def _guarded(loop, log) -> None:
    """A source's thread: its error ends that source only (said at once, raised after the run)."""
    try:
        loop.run()
    except Exception as exc:  # kept, said now, and raised by run_camera once every source has ended
        loop.error, loop.stopped_by = exc, "error"
        log(f"edge-camera: [{loop.index}] {loop.source}: stopped: {first_line(exc)}")


def drive(loops: list, outputs, log, signals: StopOnSignals) -> None:
    """Run every loop until all have ended (or a signal stops them), then close the outputs. ``signals`` is
    the caller's, installed before the view started serving."""
    threads = []
    try:
        signals.loops = loops
        if signals.signal is None:
            if len(loops) == 1:
                loops[0].run()
            else:
                for loop in loops:
                    t = threading.Thread(target=_guarded, args=(loop, log), name=f"edgekit-loop-{loop.index}",
                                         daemon=True)
                    t.start()
                    threads.append(t)
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(0.2)
    except KeyboardInterrupt:
        if signals.signal is None:
            raise  # not a signal's: not ours to turn into a clean stop
    finally:
        if signals.signal is not None:
            for loop in loops:
                if loop.error is None and loop.stopped_by == "end":
                    loop.stopped_by = "signal"
        for loop in loops:
            loop.stopping = True
            loop.grabber.stop()
        for t in threads:
            t.join(timeout=5.0)
        outputs.close()


def summarize(loops: list, sources: list):
    """One RunStats; with several sources, the totals, and each source's in ``per_source``."""
    from edgekit.runtime.camera._app import RunStats

    each = [loop.stats(getattr(src, "reconnects", 0)) for loop, src in zip(loops, sources, strict=True)]
    if len(each) == 1:
        return each[0]
    pre = [ms for loop in loops for ms in loop.pre_ms]
    inf = [ms for loop in loops for ms in loop.inf_ms]
    return RunStats(sum(s.frames for s in each), max(s.seconds for s in each), sum(s.dropped for s in each),
                    sum(s.reconnects for s in each), float(np.median(pre)) if pre else 0.0,
                    float(np.median(inf)) if inf else 0.0, "/".join(sorted({s.stopped_by for s in each})),
                    None, tuple(each))


