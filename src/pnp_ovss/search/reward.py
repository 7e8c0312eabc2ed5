"""The CLIP weak reward of ALGORITHM.md §8, as small pure functions (no model inside).

For one image at one setting (layer, head, threshold), with K classes:

1. :func:`reward_masks` — each class's GradCAM map (P×P) min-max normalised and binarised at the threshold,
   resized to the CLIP input S×S (bicubic, as skimage ``order=3``), blurred with σ = 0.04·S, re-binarised at
   0.5: one binary mask per class.
2. :func:`masked_images` — the image (S×S, [0, 1]) times each mask, and one all-zero negative image.
3. A CLIP model scores every masked image and the negative image against the K prompts (similarities × 100,
   its logit scale); :func:`image_reward` — softmax over the image's classes; class c wins when its
   probability on its own masked image beats its probability on the negative image; the image's reward is the
   number of winning classes.
4. The setting's reward is the sum over images (:func:`total_reward`, also per class, normalised by how often
   the class occurs). :func:`token_contrast` gives the optional §8 variant: reward × (1 − mean pairwise
   cosine similarity of the class masks).

Our reading where §8 is silent: the maps are min-max normalised per class before the threshold (as the
pipeline's refine threshold), and the blurred mask is re-binarised at 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

BLUR_SIGMA_FRACTION = 0.04
REBINARISE_AT = 0.5


def normalised(class_map: np.ndarray) -> np.ndarray:
    """Min-max normalisation of one map to [0, 1]; a constant map gives zeros."""
    m = np.asarray(class_map, dtype=np.float64)
    lo, hi = float(m.min()), float(m.max())
    if hi <= lo:
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def reward_mask(class_map: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """§8 step 1 for one class: bool [size, size]."""
    from scipy.ndimage import gaussian_filter

    binary = (normalised(class_map) > threshold).astype(np.float32)
    resized = np.asarray(Image.fromarray(binary, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float64)
    blurred = gaussian_filter(np.clip(resized, 0.0, 1.0), sigma=BLUR_SIGMA_FRACTION * size)
    return blurred > REBINARISE_AT


def reward_masks(class_maps: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """:func:`reward_mask` for every class of an image: ``class_maps`` [K, P, P] → bool [K, size, size]."""
    maps = np.asarray(class_maps)
    if maps.ndim != 3:
        raise ValueError(f"class maps must be [K, P, P], got shape {maps.shape}")
    return np.stack([reward_mask(m, threshold, size) for m in maps]) if len(maps) else np.zeros((0, size, size), bool)


def masked_images(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The image (float [S, S, 3] in [0, 1]) times each mask, then the all-zero negative: [K + 1, S, S, 3]."""
    image = np.asarray(image, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    if image.ndim != 3 or image.shape[:2] != masks.shape[1:]:
        raise ValueError(f"image {image.shape} and masks {masks.shape} must share S×S")
    positives = image[None] * masks[..., None]
    return np.concatenate([positives, np.zeros((1,) + image.shape, np.float32)])


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def class_wins(logits: np.ndarray) -> np.ndarray:
    """§8 step 3 for one image: ``logits`` [K + 1, K] = CLIP similarities × 100 of the K masked images and the
    negative image (last row) with the K class prompts. Returns bool [K]: class c's probability (softmax over
    the image's classes) on its own masked image beats its probability on the negative image."""
    logits = np.asarray(logits, dtype=np.float64)
    k = logits.shape[1]
    if logits.shape != (k + 1, k):
        raise ValueError(f"expected logits of shape [K + 1, K], got {logits.shape}")
    probs = softmax(logits, axis=1)
    own = probs[np.arange(k), np.arange(k)]
    negative = probs[k]
    return own > negative


def token_contrast(masks: np.ndarray) -> float:
    """Mean pairwise cosine similarity of the class masks (flattened); 0 for fewer than two classes or when a
    mask is empty."""
    m = np.asarray(masks, dtype=np.float64).reshape(len(masks), -1)
    if len(m) < 2:
        return 0.0
    norms = np.linalg.norm(m, axis=1)
    if (norms == 0).any():
        return 0.0
    unit = m / norms[:, None]
    sims = unit @ unit.T
    upper = sims[np.triu_indices(len(m), k=1)]
    return float(upper.mean())


@dataclass
class SettingReward:
    """The reward of one setting over images: total, per class (wins / occurrences) and how many images."""

    total: float = 0.0
    images: int = 0
    wins: dict[int, int] = field(default_factory=dict)
    seen: dict[int, int] = field(default_factory=dict)

    def add(self, class_ids: Sequence[int], wins: Iterable[bool], weight: float = 1.0) -> None:
        wins = list(wins)
        if len(wins) != len(class_ids):
            raise ValueError("one win flag per class")
        self.total += weight * sum(wins)
        self.images += 1
        for cid, won in zip(class_ids, wins):
            self.seen[cid] = self.seen.get(cid, 0) + 1
            self.wins[cid] = self.wins.get(cid, 0) + int(won)

    def add_image(self, class_ids: Sequence[int], logits: np.ndarray, masks: np.ndarray, contrast: bool) -> None:
        """One image: its classes' wins (:func:`class_wins` of the CLIP ``logits``), the image's reward scaled
        by ``1 - token_contrast(masks)`` with ``contrast`` (the §8 variant)."""
        self.add(list(class_ids), class_wins(logits), 1.0 - token_contrast(masks) if contrast else 1.0)

    def per_class(self) -> dict[int, float]:
        return {cid: self.wins[cid] / n for cid, n in sorted(self.seen.items())}


def prompts_for(names: list[str], template: str) -> list[str]:
    """The CLIP prompt of each class name (``search.prompt`` with ``{}`` where the name goes)."""
    if "{}" not in template:
        raise ValueError(f"search.prompt {template!r} must contain {{}} where the class name goes")
    return [template.replace("{}", n) for n in names]
