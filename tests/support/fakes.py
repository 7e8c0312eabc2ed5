"""Fabricated inputs the stage tests share: class lists in the tiny vocabulary."""

from __future__ import annotations

#: class-name lists with different lengths and word-piece structure in the tiny vocabulary
CLASS_LISTS = [
    ["cat"],
    ["pottedplant", "dog", "tvmonitor"],
    ["person", "sofa"],
    ["dog", "pottedplant"],
    ["bus", "car", "bicycle", "motorbike", "train"],
    ["diningtable"],
]
