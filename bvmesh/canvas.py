"""Pictures for people: panels of pixels, captions and a legend on a white page, as PNG.

qc.png and mesh.png are written for every case of a cohort, so they are composed here in
numpy and Pillow (already installed with matplotlib and scikit-image): importing
matplotlib and laying out a figure cost a cold ``bvmesh segment`` over a second for what
is a few images and lines of text. matplotlib stays for the plots with axes (evaluation,
volume curves).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .io import atomic_write


def rgb(colour: str) -> tuple[float, float, float]:
    """``#rrggbb`` as RGB in [0, 1]."""
    c = colour.lstrip("#")
    return tuple(int(c[i:i + 2], 16) / 255 for i in (0, 2, 4))


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


class Page:
    """A white page of ``width`` x ``height`` pixels to place images and text on."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (int(width), int(height)), "white")
        self._draw = ImageDraw.Draw(self.image)

    def paste(self, pixels: np.ndarray, left: int, top: int) -> None:
        """Place ``pixels`` (h, w, 3), RGB in [0, 1], with its top-left corner at (left, top)."""
        from PIL import Image

        data = (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)
        self.image.paste(Image.fromarray(data), (int(left), int(top)))

    def text(self, x: float, y: float, text: str, size: int = 11, anchor: str = "mb") -> None:
        """``text`` at (x, y); ``anchor`` as Pillow's (default: centred, bottom on y)."""
        self._draw.text((x, y), text, fill="black", font=_font(size), anchor=anchor)

    def legend(self, items: list[tuple[str, str]], y: float, size: int = 11) -> None:
        """A row of colour swatches and labels centred across the page, middle at ``y``."""
        font, pad, swatch = _font(size), size, 2 * size
        widths = [swatch + pad // 2 + self._draw.textlength(label, font=font) for _, label in items]
        x = (self.image.width - sum(widths) - 2 * pad * (len(items) - 1)) / 2
        for (colour, label), w in zip(items, widths):
            self._draw.rectangle((x, y - size / 3, x + swatch, y + size / 3), fill=colour)
            self._draw.text((x + swatch + pad // 2, y), label, fill="black", font=font, anchor="lm")
            x += w + 2 * pad

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page as PNG, atomically (fast compression: these are written per case)."""
        return atomic_write(Path(path), lambda tmp: self.image.save(tmp, format="PNG",
                                                                     compress_level=1))
