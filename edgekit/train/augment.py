"""Augmentation as Keras preprocessing layers, chosen by flags. Training data only: the layers sit in
a training wrapper around the model, are inactive at evaluation, and are never exported."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import EdgekitError

FLIPS = ("none", "horizontal", "vertical", "both")


@dataclass(frozen=True)
class Augmentation:
    flip: str = "none"
    rotation: float = 0.0  # fraction of a full turn, as keras.layers.RandomRotation
    zoom: float = 0.0
    translate: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0  # fraction of the 0..255 range

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise EdgekitError(f"unknown flip {self.flip!r}; choose from {', '.join(FLIPS)}")
        from edgekit.limits import check_number

        for name in ("rotation", "zoom", "translate", "contrast", "brightness"):
            object.__setattr__(self, name, check_number(getattr(self, name), f"--{name}", low=0, high=1,
                                                        high_open=True))

    @classmethod
    def course(cls) -> Augmentation:
        """The course notebooks' ImageDataGenerator recipe: flips, 40 degree rotations, 20% shifts and zoom."""
        return cls(flip="horizontal", rotation=0.11, zoom=0.2, translate=0.2)

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation, self.zoom, self.translate, self.contrast, self.brightness))

    def layers(self, keras, seed: int) -> list:
        L = keras.layers
        out = []
        if self.flip != "none":
            mode = {"horizontal": "horizontal", "vertical": "vertical", "both": "horizontal_and_vertical"}[self.flip]
            out.append(L.RandomFlip(mode, seed=seed))
        if self.rotation:
            out.append(L.RandomRotation(self.rotation, fill_mode="reflect", seed=seed + 1))
        if self.zoom:
            out.append(L.RandomZoom(self.zoom, fill_mode="reflect", seed=seed + 2))
        if self.translate:
            out.append(L.RandomTranslation(self.translate, self.translate, fill_mode="reflect", seed=seed + 3))
        if self.contrast:
            out.append(L.RandomContrast(self.contrast, value_range=(0, 255), seed=seed + 4))
        if self.brightness:
            out.append(L.RandomBrightness(self.brightness, value_range=(0, 255), seed=seed + 5))
        return out

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        parts = [f"flip {self.flip}"] if self.flip != "none" else []
        parts += [f"{k} {getattr(self, k):g}" for k in ("rotation", "zoom", "translate", "contrast", "brightness")
                  if getattr(self, k)]
        return ", ".join(parts)
