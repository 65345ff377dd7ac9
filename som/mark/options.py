"""Everything that decides how an image is marked; recorded in each output's metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from som.mark.labels import LabelMode

DRAW_MODES = ("mark", "mask", "box", "contour")
DrawMode = Literal["mark", "mask", "box", "contour"]


@dataclass(frozen=True)
class MarkOptions:
    """Arguments:
    short_side: resize so the shorter side has this many pixels (0 keeps the original size).
    min_tag_area: residuals with fewer pixels are not tagged (they keep their pixels).
    label_mode: "number" (1, 2, ...) or "alpha" (a, b, ..., aa).
    modes: any of mark (number boxes), mask (alpha fill), box, contour.
    font_size: text height in pixels for a 640-pixel short side; scaled with the image.
    box_alpha: opacity of the box behind each label.
    mask_alpha: opacity of mask fills.
    line_width: width of box and contour lines, for a 640-pixel short side.
    seed: picks the deterministic colour sequence.
    """

    short_side: int = 640
    min_tag_area: int = 110
    label_mode: LabelMode = "number"
    modes: tuple[DrawMode, ...] = ("mark",)
    font_size: int = 20
    box_alpha: float = 0.8
    mask_alpha: float = 0.4
    line_width: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.modes) - set(DRAW_MODES)
        if unknown or not self.modes:
            raise ValueError(
                f"draw modes must be a non-empty subset of {', '.join(DRAW_MODES)}; got {self.modes}"
            )
        if self.label_mode not in ("number", "alpha"):
            raise ValueError(f"label mode must be 'number' or 'alpha', got {self.label_mode!r}")
        if self.short_side < 0:
            raise ValueError("short_side must be >= 0 (0 keeps the original size)")

    def as_metadata(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "modes": list(self.modes)}
