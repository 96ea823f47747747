"""edge-camera's options as one dataclass that checks itself, so the Python API refuses what the CLI refuses."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.runtime.camera._mqtt_options import MqttOptions
from edgekit.runtime.camera._sources import PICAMERA

#: The range of each numeric option: (low, high), checked by CameraConfig and by edge-camera's argparse types.
#: duration and ema exclude their low end (more than 0 seconds; a weight more than 0).
OPTION_RANGES = {
    "top_k": (1, 100_000), "frames": (1, 10**9), "duration": (0, 1e7), "ema": (0, 1), "threshold": (0, 1),
    "reconnect": (0, 1000), "frame_timeout": (0, 86400), "size": (16, 16384),
}
MAX_SOURCES = 16


@dataclass(frozen=True)
class CameraConfig:
    source: str | tuple[str, ...] = "0"  # one source, or several (each with its own capture thread)
    top_k: int = 3
    frames: int | None = None  # stop after N frames
    duration: float | None = None  # stop after S seconds
    headless: bool = False  # JSON lines on stdout, no window
    serve: str | None = None  # PORT or HOST:PORT
    record: str | None = None  # annotated .mp4/.avi
    force: bool = False
    realtime: bool = False  # play a video file at its own frame rate, as a camera would deliver it
    ema: float | None = None  # score smoothing: weight of the newest frame
    threshold: float = 0.0  # predictions below this score are not shown
    size: tuple[int, int] | None = None  # requested camera resolution (width, height)
    reconnect: int = 5  # reconnect attempts for a live source that drops
    frame_timeout: float = 10.0
    allowed_hosts: tuple[str, ...] = ()  # --serve: Host names accepted besides localhost and the bound address
    token: str | None = None  # --serve: a secret every request must carry
    mqtt: MqttOptions | None = None  # publish predictions to an MQTT broker
    interpreter_per_source: bool = False  # several sources: one interpreter each (else one shared, locked)

    def __post_init__(self):
        """The same checks as edge-camera's options (edgekit.limits, OPTION_RANGES), so the Python API refuses
        what the CLI refuses; values are normalized (a whole-number string becomes an int)."""
        self._check_sources()
        self._check_numbers()
        self._check_outputs()

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source

    def _check_sources(self) -> None:
        """One source stays a string; several become a tuple (a one-item list becomes its string)."""
        many = self.source if isinstance(self.source, (list, tuple)) else (self.source,)
        if not many or len(many) > MAX_SOURCES:
            raise EdgekitError(f"source: give 1 to {MAX_SOURCES} sources, got {len(many)}")
        for spec in many:
            if not isinstance(spec, str) or not spec:
                raise EdgekitError(f"source: expected a camera index, /dev/videoN, 'picamera', a URL, a video file "
                                   f"or an image folder, got {spec!r}")
        if len({_source_key(spec) for spec in many}) != len(many):  # v.avi and ./v.avi, a link and its file
            raise EdgekitError("--source: the same source is given twice")
        self._put("source", many[0] if len(many) == 1 else tuple(many))
        if len(many) > 1 and self.record is not None:
            raise EdgekitError("--record takes one source; with several, use --serve, --headless or --mqtt")
        if self.mqtt is not None and not isinstance(self.mqtt, MqttOptions):
            raise EdgekitError(f"mqtt: expected MqttOptions (or None), got {type(self.mqtt).__name__}")

    def _put(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_numbers(self) -> None:
        from edgekit.limits import check_int, check_number

        def check(name: str, *, whole: bool = False, low_open: bool = False) -> None:
            low, high = OPTION_RANGES[name]
            value = getattr(self, name)
            self._put(name, check_int(value, name, low=low, high=high) if whole else
                      check_number(value, name, low=low, high=high, low_open=low_open))

        check("top_k", whole=True)
        if self.frames is not None:
            check("frames", whole=True)
        if self.duration is not None:
            check("duration", low_open=True)
        if self.ema is not None:
            check("ema", low_open=True)
        check("threshold")
        check("reconnect", whole=True)
        check("frame_timeout", low_open=True)
        if self.size is not None:
            try:
                w, h = self.size
            except (TypeError, ValueError):
                raise EdgekitError(f"size: expected (width, height), got {self.size!r}") from None
            low, high = OPTION_RANGES["size"]
            self._put("size", (check_int(w, "size width", low=low, high=high),
                               check_int(h, "size height", low=low, high=high)))

    def _check_outputs(self) -> None:
        from edgekit.runtime.camera._guards import check_allowed_hosts, check_token, parse_address

        if self.serve is not None:
            parse_address(self.serve)
        if self.record is not None and (not isinstance(self.record, (str, os.PathLike)) or not str(self.record)):
            raise EdgekitError(f"record: expected a video file name, got {self.record!r}")
        self._put("allowed_hosts", check_allowed_hosts(self.allowed_hosts))
        self._put("token", check_token(self.token))
        if (self.allowed_hosts or self.token is not None) and self.serve is None:
            raise EdgekitError("--allow-host and --token apply to --serve, which is not given")


def _source_key(spec: str) -> str:
    """What a --source names, for finding one given twice: a file or folder by its real path, the rest as written."""
    if (spec.isascii() and spec.isdigit()) or "://" in spec or spec.lower() in PICAMERA:
        return spec.lower()
    return os.path.realpath(spec)
