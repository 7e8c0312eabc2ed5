"""refine_image against an independent, straightforward implementation of ALGORITHM.md §5–§6.

The reference below is written from the spec in the released code's own style (torch tensors, a loop
per channel, pydensecrf called directly even on NaN, the in-place relabel loop); it shares no code with
``pnp_ovss.refine``. The maps come from a Zarr shard store fixture written with ``store.write_image_maps``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from pnp_ovss.refine import RELEASED_PARAMS, refine_image
from pnp_ovss.store import ImageMaps, open_store, read_image_maps, write_image_maps


def reference_refine(maps, image, class_ids, rule, p):
    g = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    k, d = g.shape[:2]
    h, w = image.shape[:2]
    if k == 0:
        return np.zeros((h, w), np.uint8)
    # §5: accumulator = G'_0, then += G'_d for d = 0.. (or 1.. with the fix); one iteration: G'_0
    agg = g[:, 0].clone()
    if d > 1:
        for i in range(1 if p["single_count_first_iteration"] else 0, d):
            agg += g[:, i]
    # §6.1
    norm = agg.clone()
    for c in range(k):
        lo, hi = agg[c].min(), agg[c].max()
        norm[c] = torch.zeros_like(agg[c]) if (p["nan_guard"] and hi == lo) else (agg[c] - lo) / (hi - lo)
    pred = agg * (norm >= p["threshold"]).type(torch.bool)
    # §6.2
    pred = F.interpolate(pred.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=True).squeeze()
    if pred.dim() < 3:
        max_map = pred
        pred = pred.unsqueeze(0)
    else:
        max_map = torch.max(pred, dim=0)[0]
    # §6.4
    background = (max_map == 0).unsqueeze(0)
    with_bg = rule == "always" or p["always_background"] or k < 3
    stack = torch.cat((background, pred), dim=0) if with_bg else pred
    # §6.5
    if "blur" in p["postprocess"]:
        blurred = []
        for c in range(stack.shape[0]):
            a = ndimage.gaussian_filter(stack[c].numpy(), p["blur_scale"] * max(h, w))
            a = a - a.min()
            with np.errstate(invalid="ignore", divide="ignore"):
                a = a * 0 if (p["nan_guard"] and a.max() == 0) else a / a.max()
            blurred.append(torch.from_numpy(a))
        stack = torch.stack(blurred, dim=0)
    # §6.6
    if "crf" in p["postprocess"]:
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as utils

        probs = F.softmax(stack, dim=0).numpy()
        n = probs.shape[0]
        unary = np.ascontiguousarray(utils.unary_from_softmax(probs))
        crf = dcrf.DenseCRF2D(w, h, n)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
        crf.addPairwiseBilateral(
            sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"], rgbim=np.ascontiguousarray(image).copy(),
            compat=p["bilateral_compat"],
        )
        q = np.array(crf.inference(p["crf_iterations"])).reshape((n, h, w))
        label = np.argmax(q, axis=0).reshape((h, w)).astype(np.float32)
    else:
        label = torch.argmax(stack, dim=0).numpy()
    # §6.7
    offset = 1 if with_bg else 0
    if p["lookup_relabel"]:
        table = ([0] if with_bg else []) + list(class_ids)
        label = np.asarray(table)[label.astype(int)]
    else:
        for i in range(k - 1, -1, -1):
            label[label == int(i + offset)] = class_ids[i]
    return label.astype(np.uint8)


def blob_maps(rng, k, d=4, p=21, drop=10):
    """GradCAM-like [K, D, P, P]: a bump per class, different per iteration, zeroed at dropped cells."""
    yy, xx = np.mgrid[0:p, 0:p]
    maps = np.zeros((k, d, p, p), np.float32)
    dropped = np.zeros((d, drop), np.int32)
    gone: list[int] = []
    centres = rng.uniform(2, p - 3, size=(k, 2))
    for it in range(d):
        for c in range(k):
            cy, cx = centres[c] + rng.normal(0, 0.7, 2)
            bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 4) ** 2))
            maps[c, it] = (bump * rng.uniform(0.5, 2) + 0.02 * rng.random((p, p))).astype(np.float32)
        flat = maps[:, it].reshape(k, -1)
        flat[:, gone] = 0
        score = flat.sum(0)
        score[gone] = 0
        new = np.argsort(score)[-drop:]
        dropped[it] = new
        gone.extend(int(i) for i in new)
    return maps, dropped


def smooth_image(rng, h, w):
    base = rng.integers(0, 256, (4, 5, 3)).astype(np.float32)
    t = torch.from_numpy(base).permute(2, 0, 1).unsqueeze(0)
    up = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    return np.clip(up + rng.normal(0, 6, up.shape), 0, 255).astype(np.uint8)


# image_id: (class ids, (H, W), maps override)
FIXTURE = {
    "voc_collision": ([15, 1], (48, 64)),
    "four_classes": ([40, 2, 9, 1], (50, 40)),
    "two_classes": ([7, 3], (37, 53)),
    "one_class": ([5], (40, 44)),
    "ring_nan": ([12], (8, 8)),  # background channel all zero → NaN in faithful mode
    "single_iteration": ([6, 2, 4], (30, 36)),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(2024)
    path = tmp_path_factory.mktemp("gradcam") / "maps.zarr"
    group = open_store(path, create=True)
    images = {}
    for image_id, (ids, (h, w)) in FIXTURE.items():
        if image_id == "ring_nan":
            maps = np.full((1, 4, 3, 3), 5.0, np.float32)
            maps[0, :, 1, 1] = 0
            dropped = np.zeros((4, 1), np.int32)
        elif image_id == "single_iteration":
            maps, dropped = blob_maps(rng, len(ids), d=1)
        else:
            maps, dropped = blob_maps(rng, len(ids))
        attrs = {"class_ids": ids, "class_names": [f"c{i}" for i in ids], "orig_size": [h, w]}
        write_image_maps(group, ImageMaps(image_id, maps, dropped, attrs))
        images[image_id] = smooth_image(rng, h, w)
    return path, images


CONFIGS = {
    "faithful": {},
    "faithful_crf": {"postprocess": "crf"},
    "faithful_blur": {"postprocess": "blur"},
    "faithful_none": {"postprocess": "none"},
    "clean": {"single_count_first_iteration": True, "lookup_relabel": True, "nan_guard": True,
              "always_background": True},
    "clean_tuned": {"single_count_first_iteration": True, "lookup_relabel": True, "nan_guard": True,
                    "threshold": 0.3, "blur_scale": 0.03, "crf_iterations": 5, "bilateral_srgb": 13},
}


@pytest.mark.parametrize("rule", ["always", "fewer_than_3"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("image_id", list(FIXTURE))
def test_refine_image_equals_the_reference(store, image_id, config, rule):
    path, images = store
    item = read_image_maps(path, image_id)
    p = {**RELEASED_PARAMS, **CONFIGS[config]}
    ours = refine_image(item.maps, images[image_id], item.class_ids, p, rule)
    theirs = reference_refine(item.maps, images[image_id], item.class_ids, rule, p)
    assert ours.dtype == np.uint8 and ours.shape == item.orig_size
    assert np.array_equal(ours, theirs)


def test_fixture_exercises_the_quirks(store):
    """The comparison above is only worth something if the fixture hits collisions, NaN and both rules."""
    path, images = store
    p = dict(RELEASED_PARAMS)
    item = read_image_maps(path, "voc_collision")
    faithful = refine_image(item.maps, images["voc_collision"], item.class_ids, p, "always")
    clean = refine_image(item.maps, images["voc_collision"], item.class_ids, {**p, "lookup_relabel": True}, "always")
    assert (clean == 1).any() and not (faithful == 1).any()  # aeroplane pixels became person
    ring = read_image_maps(path, "ring_nan")
    assert np.all(refine_image(ring.maps, images["ring_nan"], ring.class_ids, p, "always") == 0)
    assert np.all(refine_image(ring.maps, images["ring_nan"], ring.class_ids, {**p, "nan_guard": True}, "always") == 12)
    four = read_image_maps(path, "four_classes")
    no_bg = refine_image(four.maps, images["four_classes"], four.class_ids, p, "fewer_than_3")
    assert not (no_bg == 0).any()
