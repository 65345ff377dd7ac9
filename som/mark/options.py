"""Everything that decides how an image is marked; recorded in each output's metadata."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from som.mark.labels import LabelMode
from som.settings import Real, Settings

DRAW_MODES = ("mark", "mask", "box", "contour")
DrawMode = Literal["mark", "mask", "box", "contour"]


class MarkOptions(Settings):
    """Arguments:
    short_side: resize so the shorter side has this many pixels (0 keeps the original size).
    min_tag_area: residuals with fewer pixels are not tagged (they keep their pixels).
    label_mode: "number" (1, 2, ...) or "alpha" (a, b, ..., aa).
    modes: draw modes, a non-empty list of mark (number boxes), mask (alpha fill), box, contour.
    font_size: text height in pixels for a 640-pixel short side; scaled with the image.
    box_alpha: opacity of the box behind each label.
    mask_alpha: opacity of mask fills.
    line_width: width of box and contour lines, for a 640-pixel short side.
    seed: picks the deterministic colour sequence.
    """

    short_side: int = Field(default=640, ge=0)
    min_tag_area: int = 110
    label_mode: LabelMode = "number"
    modes: tuple[DrawMode, ...] = Field(default=("mark",), min_length=1)
    font_size: int = 20
    box_alpha: Real = 0.8
    mask_alpha: Real = 0.4
    line_width: int = 2
    seed: int = 0

    def as_metadata(self) -> dict[str, Any]:
        """The options as recorded in outputs and hashed into cache keys (modes as a list)."""
        return {**self.model_dump(), "modes": list(self.modes)}
