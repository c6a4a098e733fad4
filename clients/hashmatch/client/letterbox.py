"""Black letterbox and pillarbox bars of a decoded frame, found so they can be cut before PDQ.

A copy re-encoded for another screen shape gets black bars, and bars move every frame's PDQ
hash far from the unbarred frame: on the reference test clips, none of the barred frames of a
scene is within 31 bits of the unbarred ones. Cutting the bars on both sides (the listed video
and the query) brings them back together.

Each frame is judged alone (a bar can appear or change size mid-video, after an edit), from
its edges inwards: a row or column is part of a bar while nearly all its pixels are black.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ContentBox", "content_box"]

# Encoders leave bars at video black (RGB 0) with compression ringing of a few levels near the
# picture's edge (up to 14 on the test clips); 32 keeps a margin while staying below the
# darkest picture detail PDQ can use.
DARK_LEVEL = 32
# A line is a bar while at most this share of its pixels is brighter: stray noise or a few
# pixels of a logo do not stop the cut, a line with real picture in it does.
BRIGHT_SHARE = 0.02
# Bars that would leave less than this share of the width or height are a dark scene, not a
# letterbox: such a frame is hashed whole.
MIN_KEPT_SHARE = 0.25


class ContentBox(NamedTuple):
    """The picture inside the bars: rows ``top:bottom`` and columns ``left:right``."""

    top: int
    bottom: int
    left: int
    right: int


def content_box(rgb: NDArray[np.uint8]) -> ContentBox:
    """The box of ``rgb`` (height x width x 3) left once black bars are cut from every edge."""
    height, width = rgb.shape[:2]
    whole = ContentBox(0, height, 0, width)
    # Channel by channel: numpy's max over the last axis of three is ~30 times slower.
    bright = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) > DARK_LEVEL
    rows = np.flatnonzero(bright.mean(axis=1) > BRIGHT_SHARE)
    cols = np.flatnonzero(bright.mean(axis=0) > BRIGHT_SHARE)
    if rows.size == 0 or cols.size == 0:
        return whole  # all black: nothing to tell bars from picture
    box = ContentBox(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    if (box.bottom - box.top) < MIN_KEPT_SHARE * height or (
        box.right - box.left
    ) < MIN_KEPT_SHARE * width:
        return whole
    return box
