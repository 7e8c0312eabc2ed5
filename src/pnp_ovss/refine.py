"""Refine stage maths: GradCAM maps → label map (ALGORITHM.md §5 aggregate, §6 post-processing).

Each step is a small pure function on numpy arrays, so it can be tested on its own; ``refine_image``
chains them. Faithful mode reproduces the released code's numerics and quirks (§10.3, §10.5, §10.6,
§10.9); each quirk has its own switch in the refine parameters (``config.refine_params``):

* ``single_count_first_iteration`` (§10.3): aggregate Σ_d G'_d instead of 2·G'_0 + Σ_{d≥1} G'_d;
* ``nan_guard`` (§10.6): a constant channel becomes zeros instead of NaN;
* ``always_background`` (§10.9): add the background channel whatever the dataset rule says;
* ``lookup_relabel`` (§10.5): channel → dataset id through a table, not the in-place sequential loop.

dtypes follow the released code: maps are float32 throughout (torch tensors there), the Gaussian blur
runs on float32 input (scipy computes in float64 and stores float32), the softmax is torch float32.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .parameters import REFINE_KEYS
from .datasets.base import BACKGROUND_ALWAYS, BACKGROUND_FEWER_THAN_3

log = logging.getLogger(__name__)

POSTPROCESS_CHOICES = ("blur+crf", "crf", "blur", "none")

#: keys of the refine parameters (``config.refine_params``) that ``refine_image`` reads

#: the released values (``--threshold 0.15 --postprocess blur+crf``, ``densecrf`` constants), faithful switches
RELEASED_PARAMS = {
    "postprocess": "blur+crf",
    "threshold": 0.15,
    "blur_scale": 0.05,
    "crf_iterations": 10,
    "gaussian_sxy": 3,
    "gaussian_compat": 7,
    "bilateral_sxy": 50,
    "bilateral_srgb": 5,
    "bilateral_compat": 10,
    "single_count_first_iteration": False,
    "lookup_relabel": False,
    "nan_guard": False,
    "always_background": False,
}


def check_refine_params(params: dict) -> dict:
    """The refine parameters ``refine_image`` needs, or a ValueError naming the missing/bad ones."""
    missing = [k for k in REFINE_KEYS if k not in params]
    if missing:
        raise ValueError(f"refine parameters lack {', '.join(missing)} (see config.refine_params)")
    if params["postprocess"] not in POSTPROCESS_CHOICES:
        raise ValueError(
            f"refine.postprocess is {params['postprocess']!r}; expected one of {', '.join(POSTPROCESS_CHOICES)}"
        )
    return {k: params[k] for k in REFINE_KEYS}


# --- §5: aggregate over drop iterations ---------------------------------------------------------------


def aggregate_maps(maps: np.ndarray, single_count_first_iteration: bool) -> np.ndarray:
    """[K, D, P, P] per-iteration maps G'_d → [K, P, P] aggregate (float32).

    Released (§5, quirk §10.3): the accumulator starts at G'_0 and the loop adds G'_0..G'_{D-1}, i.e.
    2·G'_0 + Σ_{d≥1} G'_d, summed in that order in float32. With D == 1 the released code has no
    aggregate and predicts from G'_0 alone. ``single_count_first_iteration``: Σ_d G'_d.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [K, D, P, P], got shape {maps.shape}")
    n_iter = maps.shape[1]
    if n_iter == 0:
        raise ValueError("maps have no drop iteration (D == 0)")
    total = maps[:, 0].copy()
    if n_iter == 1:
        return total
    first = 1 if single_count_first_iteration else 0
    for d in range(first, n_iter):
        total += maps[:, d]
    return total


# --- §6.1: per-class threshold -------------------------------------------------------------------------


def min_max_normalised(maps: np.ndarray, nan_guard: bool) -> np.ndarray:
    """Per channel (C − min C)/(max C − min C) over the last two axes.

    A constant channel gives 0/0 = NaN as released; with ``nan_guard`` it gives zeros.
    """
    maps = np.asarray(maps, dtype=np.float32)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    span = hi - lo
    if nan_guard:
        safe = np.where(span > 0, span, np.float32(1))
        return np.where(span > 0, (maps - lo) / safe, np.float32(0)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (maps - lo) / span


def threshold_maps(maps: np.ndarray, threshold: float, nan_guard: bool) -> np.ndarray:
    """§6.1: keep the raw value of cells whose per-class min–max value is ≥ threshold, others → 0.

    A constant map normalises to NaN (faithful) and NaN ≥ t is false, so all its cells are dropped; the
    result never holds NaN. The comparison is made in float32 like the released torch code.
    """
    maps = np.asarray(maps, dtype=np.float32)
    keep = min_max_normalised(maps, nan_guard) >= np.float32(threshold)
    return maps * keep.astype(np.float32)


# --- §6.2: upsample -------------------------------------------------------------------------------------


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[K, P, P] → [K, H, W]: ``F.interpolate(bilinear, align_corners=True)`` in float32."""
    maps = np.asarray(maps, dtype=np.float32)
    h, w = int(size[0]), int(size[1])
    if maps.shape[0] == 0:
        return np.zeros((0, h, w), dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(maps)).unsqueeze(0)
    with torch.no_grad():
        out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)
    return out.squeeze(0).numpy()


# --- §6.4: background channel ----------------------------------------------------------------------------


def uses_background_channel(n_classes: int, background_rule: str, always_background: bool) -> bool:
    """§6.4: VOC/COCO-Object (rule "always") always; PSC/ADE/COCO-Stuff ("fewer_than_3") only when K < 3."""
    if background_rule not in (BACKGROUND_ALWAYS, BACKGROUND_FEWER_THAN_3):
        raise ValueError(f"unknown background rule {background_rule!r}")
    if always_background or background_rule == BACKGROUND_ALWAYS:
        return True
    return n_classes < 3


def background_channel(upsampled: np.ndarray) -> np.ndarray:
    """[H, W] float32: 1 where every class map is exactly 0 after upsampling, else 0."""
    upsampled = np.asarray(upsampled, dtype=np.float32)
    if upsampled.shape[0] == 0:
        return np.ones(upsampled.shape[1:], dtype=np.float32)
    return (upsampled.max(axis=0) == 0).astype(np.float32)


def add_background_channel(
    upsampled: np.ndarray, background_rule: str, always_background: bool
) -> tuple[np.ndarray, bool]:
    """The channel stack F of §6.4 and whether channel 0 is background: [bg, R_1..R_K] or [R_1..R_K]."""
    upsampled = np.asarray(upsampled, dtype=np.float32)
    if not uses_background_channel(upsampled.shape[0], background_rule, always_background):
        return upsampled, False
    return np.concatenate([background_channel(upsampled)[None], upsampled], axis=0), True


# --- §6.5: blur -------------------------------------------------------------------------------------------


def blur_sigma(blur_scale: float, size: tuple[int, int]) -> float:
    """σ = blur_scale · max(H, W) pixels (released: 0.05·max of the GT size)."""
    return blur_scale * max(int(size[0]), int(size[1]))


def blur_channels(channels: np.ndarray, blur_scale: float, nan_guard: bool) -> np.ndarray:
    """§6.5: Gaussian blur each channel (reflect, truncate 4), subtract its min, divide by its max.

    A constant channel (e.g. a background channel with no pixel set) becomes NaN as released; with
    ``nan_guard`` it becomes zeros.
    """
    channels = np.asarray(channels, dtype=np.float32)
    sigma = blur_sigma(blur_scale, channels.shape[1:])
    out = np.empty_like(channels)
    for c in range(channels.shape[0]):
        blurred = ndimage.gaussian_filter(channels[c], sigma, mode="reflect", truncate=4.0)
        blurred = blurred - blurred.min()
        top = blurred.max()
        if top == 0 and nan_guard:
            out[c] = 0
            continue
        if top == 0:
            log.debug("channel %d is constant after blurring: NaN (faithful, §6.5)", c)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[c] = blurred / top
    return out


# --- §6.6: softmax, DenseCRF, argmax ----------------------------------------------------------------------


def channel_softmax(channels: np.ndarray) -> np.ndarray:
    """Softmax over the channel axis, torch float32 as released (a NaN anywhere in a pixel's vector
    makes that pixel's whole vector NaN)."""
    t = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))
    with torch.no_grad():
        return F.softmax(t, dim=0).numpy()


def argmax_channels(channels: np.ndarray) -> np.ndarray:
    """Per-pixel channel index of the maximum, int64 [H, W].

    Same rule as ``torch.argmax`` and ``np.argmax``: the first maximum wins ties, and NaN counts as the
    maximum (the first NaN channel wins), which is what the released ``blur`` variant does with a NaN channel.
    """
    return np.argmax(np.asarray(channels), axis=0).astype(np.int64)


def unary_from_probabilities(probabilities: np.ndarray, clip: float = 1e-5) -> np.ndarray:
    """pydensecrf's ``unary_from_softmax``: −log(clip(p, 1e-5, 1)) as float32 [C, H·W] (NaN stays NaN)."""
    p = np.clip(np.asarray(probabilities), clip, 1.0)
    return np.ascontiguousarray(-np.log(p).reshape(p.shape[0], -1).astype(np.float32))


def nan_unary_outcome(shape: tuple[int, int]) -> np.ndarray:
    """What the released CRF yields when the unary holds NaN: pydensecrf's message passing spreads the NaN
    over the whole image (the filtering mixes every pixel), Q is NaN everywhere and ``np.argmax`` returns
    channel 0 at every pixel. tests/test_refine.py checks this against pydensecrf itself."""
    return np.zeros(shape, dtype=np.int64)


def crf_labels(channels: np.ndarray, image_rgb: np.ndarray, params: dict) -> np.ndarray:
    """§6.6: softmax over channels → DenseCRF2D (Gaussian + bilateral) → argmax; channel index [H, W].

    ``params`` keys: crf_iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
    bilateral_compat. ``image_rgb`` is the original uint8 RGB image of the same H×W.
    """
    import pydensecrf.densecrf as dcrf

    channels = np.asarray(channels, dtype=np.float32)
    n, h, w = channels.shape
    image = np.asarray(image_rgb)
    if image.shape != (h, w, 3):
        raise ValueError(f"CRF image is {image.shape}, expected ({h}, {w}, 3) to match the maps")
    image = np.array(image, dtype=np.uint8, order="C", copy=True)  # pydensecrf needs a writable buffer
    probabilities = channel_softmax(channels)
    unary = unary_from_probabilities(probabilities)
    if np.isnan(unary).any():
        log.debug("NaN in the CRF unary: every pixel gets channel 0 (faithful, §6.5)")
        return nan_unary_outcome((h, w))
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    crf.addPairwiseBilateral(
        sxy=params["bilateral_sxy"], srgb=params["bilateral_srgb"], rgbim=image, compat=params["bilateral_compat"]
    )
    q = np.asarray(crf.inference(int(params["crf_iterations"]))).reshape(n, h, w)
    return argmax_channels(q)


def postprocess_channels(channels: np.ndarray, image_rgb: np.ndarray | None, params: dict) -> np.ndarray:
    """§6.5–6.6 by ``params["postprocess"]``: blur+crf | crf (unblurred F) | blur (argmax of blurred F) |
    none (argmax of F). Returns the channel index per pixel."""
    mode = params["postprocess"]
    if mode not in POSTPROCESS_CHOICES:
        raise ValueError(f"postprocess {mode!r}; expected one of {', '.join(POSTPROCESS_CHOICES)}")
    if "blur" in mode:
        channels = blur_channels(channels, params["blur_scale"], params["nan_guard"])
    if "crf" in mode:
        if image_rgb is None:
            raise ValueError("the CRF needs the original RGB image")
        return crf_labels(channels, image_rgb, params)
    return argmax_channels(channels)


# --- §6.7: channel → dataset id ----------------------------------------------------------------------------


def channel_class_ids(class_ids: Sequence[int], has_background: bool) -> list[int]:
    """The dataset id each channel stands for: [0, id_1..id_K] with a background channel, else [id_1..id_K]."""
    ids = [int(i) for i in class_ids]
    return [0] + ids if has_background else ids


def relabel_sequential(channel_map: np.ndarray, class_ids: Sequence[int], has_background: bool) -> np.ndarray:
    """The released in-place relabel (§6.7, quirk §10.5): for i = K−1 down to 0, pixels equal to i+1 (with
    background) or i (without) become id_i. A pixel relabelled to an id that equals a channel value still to
    come is relabelled again, e.g. channels [bg, person=15, aeroplane=1]: aeroplane → 1 → 15."""
    out = np.array(channel_map, dtype=np.int64, copy=True)
    offset = 1 if has_background else 0
    for i in range(len(class_ids) - 1, -1, -1):
        out[out == i + offset] = int(class_ids[i])
    return out


def relabel_lookup(channel_map: np.ndarray, class_ids: Sequence[int], has_background: bool) -> np.ndarray:
    """Channel → dataset id through a table (clean, §10.5): no collisions."""
    table = np.asarray(channel_class_ids(class_ids, has_background), dtype=np.int64)
    channel_map = np.asarray(channel_map, dtype=np.int64)
    if channel_map.size and (channel_map.min() < 0 or channel_map.max() >= len(table)):
        raise ValueError(f"channel index out of range 0..{len(table) - 1}")
    return table[channel_map]


def relabel_channels(
    channel_map: np.ndarray, class_ids: Sequence[int], has_background: bool, lookup_relabel: bool
) -> np.ndarray:
    """§6.7: channel indices → dataset ids (0 = background), int64 [H, W]."""
    if lookup_relabel:
        return relabel_lookup(channel_map, class_ids, has_background)
    return relabel_sequential(channel_map, class_ids, has_background)


# --- the whole chain ------------------------------------------------------------------------------------------


def refine_image(
    maps: np.ndarray,
    image_rgb: np.ndarray,
    class_ids: Sequence[int],
    params: dict,
    background_rule: str,
) -> np.ndarray:
    """Stored maps [K, D, P, P] of one image → uint8 label map [H, W] in dataset ids (0 = background).

    (H, W) is the size of ``image_rgb`` (the original image, also the CRF's colour reference). ``class_ids``
    are the dataset ids of the K selected classes in the maps' order; ``background_rule`` is the dataset's
    (``"always"`` or ``"fewer_than_3"``). K = 0 (clean mode: no confident class) gives all background.
    """
    p = check_refine_params(params)
    maps = np.asarray(maps, dtype=np.float32)
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {image_rgb.shape}")
    h, w = image_rgb.shape[:2]
    if maps.ndim != 4 or maps.shape[0] != len(class_ids):
        raise ValueError(f"maps of shape {maps.shape} do not match {len(class_ids)} class ids")
    if len(class_ids) == 0:
        return np.zeros((h, w), dtype=np.uint8)

    aggregate = aggregate_maps(maps, p["single_count_first_iteration"])
    kept = threshold_maps(aggregate, p["threshold"], p["nan_guard"])
    upsampled = upsample(kept, (h, w))
    channels, has_background = add_background_channel(upsampled, background_rule, p["always_background"])
    channel_map = postprocess_channels(channels, image_rgb, p)
    labels = relabel_channels(channel_map, class_ids, has_background, p["lookup_relabel"])
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"class ids {sorted(set(int(i) for i in class_ids))} do not fit a uint8 label map")
    return labels.astype(np.uint8)
