"""Each step of ALGORITHM.md §6 (and the §5 aggregate) on small arrays with known answers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from pnp_ovss import refine as R

NAN = np.nan


def params(**overrides):
    p = dict(R.RELEASED_PARAMS)
    p.update(overrides)
    return p


# --- §5 aggregate ----------------------------------------------------------------------------------------


def iteration_maps(values, k=2, p=3):
    """[K, D, P, P] with G'_d filled with values[d] (class c scaled by c+1)."""
    maps = np.zeros((k, len(values), p, p), dtype=np.float32)
    for d, v in enumerate(values):
        for c in range(k):
            maps[c, d] = v * (c + 1)
    return maps


def test_aggregate_counts_first_iteration_twice_in_faithful_mode():
    agg = R.aggregate_maps(iteration_maps([1, 2, 3, 4]), single_count_first_iteration=False)
    assert agg.shape == (2, 3, 3) and agg.dtype == np.float32
    assert np.all(agg[0] == 11) and np.all(agg[1] == 22)  # 2·1 + 2 + 3 + 4


def test_aggregate_counts_first_iteration_once_with_the_fix():
    agg = R.aggregate_maps(iteration_maps([1, 2, 3, 4]), single_count_first_iteration=True)
    assert np.all(agg[0] == 10) and np.all(agg[1] == 20)


@pytest.mark.parametrize("single", [False, True])
def test_aggregate_of_a_single_iteration_is_that_iteration(single):
    agg = R.aggregate_maps(iteration_maps([5]), single_count_first_iteration=single)
    assert np.all(agg[0] == 5) and np.all(agg[1] == 10)


def test_aggregate_sums_in_the_released_float32_order():
    rng = np.random.default_rng(3)
    maps = rng.random((3, 4, 5, 5)).astype(np.float32)
    released = torch.from_numpy(maps[:, 0]).clone()
    for d in range(4):
        released += torch.from_numpy(maps[:, d])
    assert np.array_equal(R.aggregate_maps(maps, False), released.numpy())


# --- §6.1 threshold ----------------------------------------------------------------------------------------


def test_threshold_keeps_raw_values_of_cells_at_or_above_the_min_max_threshold():
    m = np.array([[[2, 3, 4], [5, 6, 7], [8, 9, 10]]], dtype=np.float32)  # n = (m - 2) / 8
    out = R.threshold_maps(m, 0.15, nan_guard=False)
    # n: 0, .125, .25, ... → only 2 and 3 are below 0.15
    assert np.array_equal(out, np.array([[[0, 0, 4], [5, 6, 7], [8, 9, 10]]], dtype=np.float32))


def test_threshold_is_per_class():
    m = np.stack([np.arange(9, dtype=np.float32).reshape(3, 3), 100 + np.arange(9, dtype=np.float32).reshape(3, 3)])
    out = R.threshold_maps(m, 0.5, nan_guard=False)
    assert np.array_equal(out[0] > 0, np.arange(9).reshape(3, 3) >= 4)
    assert np.array_equal(out[1] > 0, np.arange(9).reshape(3, 3) >= 4)


def test_constant_map_normalises_to_nan_in_faithful_mode_and_zero_with_the_guard():
    m = np.full((1, 3, 3), 0.7, dtype=np.float32)
    assert np.isnan(R.min_max_normalised(m, nan_guard=False)).all()
    assert np.array_equal(R.min_max_normalised(m, nan_guard=True), np.zeros_like(m))


@pytest.mark.parametrize("guard", [False, True])
def test_constant_map_is_dropped_entirely_and_no_nan_leaves_the_threshold(guard):
    m = np.stack([np.full((3, 3), 0.7, np.float32), np.eye(3, dtype=np.float32)])
    out = R.threshold_maps(m, 0.15, nan_guard=guard)
    assert not np.isnan(out).any()
    assert np.all(out[0] == 0)
    assert np.array_equal(out[1], np.eye(3, dtype=np.float32))


def test_threshold_compares_in_float32_like_torch():
    rng = np.random.default_rng(0)
    m = rng.random((4, 21, 21)).astype(np.float32)
    t = torch.from_numpy(m)
    norm = torch.stack([(t[i] - t[i].min()) / (t[i].max() - t[i].min()) for i in range(4)])
    released = t * (norm >= 0.15).type(torch.bool)
    assert np.array_equal(R.threshold_maps(m, 0.15, nan_guard=False), released.numpy())


# --- §6.2 upsample -----------------------------------------------------------------------------------------


def test_upsample_is_bilinear_with_aligned_corners():
    m = np.array([[[0, 2], [4, 6]]], dtype=np.float32)
    out = R.upsample(m, (3, 3))
    assert np.allclose(out[0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]])


def test_upsample_keeps_the_class_axis_for_one_class_and_takes_h_then_w():
    out = R.upsample(np.ones((1, 21, 21), np.float32), (375, 500))
    assert out.shape == (1, 375, 500) and out.dtype == np.float32


# --- §6.4 background ----------------------------------------------------------------------------------------


def test_background_channel_marks_pixels_where_every_class_is_exactly_zero():
    up = np.array([[[0, 0.5], [0, 0]], [[0, 0], [1e-6, 0]]], dtype=np.float32)
    assert np.array_equal(R.background_channel(up), np.array([[1, 0], [0, 1]], dtype=np.float32))


@pytest.mark.parametrize(
    "k, rule, always, expected",
    [
        (1, "always", False, True),
        (5, "always", False, True),
        (1, "fewer_than_3", False, True),
        (2, "fewer_than_3", False, True),
        (3, "fewer_than_3", False, False),
        (7, "fewer_than_3", False, False),
        (7, "fewer_than_3", True, True),
    ],
)
def test_background_rule(k, rule, always, expected):
    assert R.uses_background_channel(k, rule, always) is expected
    up = np.zeros((k, 2, 2), np.float32)
    stack, has_bg = R.add_background_channel(up, rule, always)
    assert has_bg is expected
    assert stack.shape[0] == k + (1 if expected else 0)
    if expected:
        assert np.all(stack[0] == 1)


def test_unknown_background_rule_is_an_error():
    with pytest.raises(ValueError, match="background rule"):
        R.uses_background_channel(2, "sometimes", False)


# --- §6.5 blur ----------------------------------------------------------------------------------------------


def test_blur_uses_sigma_from_the_image_size_and_rescales_each_channel_to_0_1():
    rng = np.random.default_rng(1)
    ch = rng.random((2, 30, 40)).astype(np.float32)
    out = R.blur_channels(ch, 0.05, nan_guard=False)
    ref = ndimage.gaussian_filter(ch[1], 0.05 * 40, mode="reflect", truncate=4.0)
    ref = (ref - ref.min()) / (ref - ref.min()).max()
    assert np.allclose(out[1], ref, atol=1e-6)
    assert np.isclose(out.min(axis=(1, 2)), 0).all() and np.isclose(out.max(axis=(1, 2)), 1).all()
    assert R.blur_sigma(0.05, (375, 500)) == 25.0


def test_blur_of_a_constant_channel_is_nan_in_faithful_mode_and_zero_with_the_guard():
    ch = np.stack([np.zeros((10, 12), np.float32), np.eye(10, 12, dtype=np.float32)])
    faithful = R.blur_channels(ch, 0.05, nan_guard=False)
    assert np.isnan(faithful[0]).all() and not np.isnan(faithful[1]).any()
    guarded = R.blur_channels(ch, 0.05, nan_guard=True)
    assert np.array_equal(guarded[0], np.zeros((10, 12), np.float32))
    assert np.array_equal(guarded[1], faithful[1])


# --- §6.6 softmax / CRF / argmax ------------------------------------------------------------------------------


def test_argmax_follows_torch_for_ties_and_nan():
    ch = np.array([[[0.5, 0.0]], [[NAN, 0.0]], [[NAN, 0.0]]], dtype=np.float32)
    ours = R.argmax_channels(ch)
    theirs = torch.argmax(torch.from_numpy(ch), dim=0).numpy()
    assert np.array_equal(ours, theirs) and ours.tolist() == [[1, 0]]


def test_softmax_is_flat_on_0_1_maps_and_all_nan_where_one_channel_is_nan():
    ch = np.array([[[0.0]], [[1.0]]], dtype=np.float32)
    p = R.channel_softmax(ch)
    assert np.allclose(p[:, 0, 0], [1 / (1 + np.e), np.e / (1 + np.e)])
    p = R.channel_softmax(np.array([[[NAN, 0.2]], [[0.3, 0.1]]], dtype=np.float32))
    assert np.isnan(p[:, 0, 0]).all() and not np.isnan(p[:, 0, 1]).any()


def test_pydensecrf_with_a_nan_unary_gives_channel_0_everywhere_as_emulated():
    """What the released code got when a blurred channel was NaN: ask pydensecrf itself."""
    import pydensecrf.densecrf as dcrf

    rng = np.random.default_rng(0)
    h, w = 40, 50
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ch = rng.random((3, h, w)).astype(np.float32)
    ch[2] = NAN  # e.g. a class channel that was constant before the blur
    unary = R.unary_from_probabilities(R.channel_softmax(ch))
    assert np.isnan(unary).all()
    crf = dcrf.DenseCRF2D(w, h, 3)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=3, compat=7)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.asarray(crf.inference(10)).reshape(3, h, w)
    released = np.argmax(q, axis=0)
    assert np.array_equal(released, R.nan_unary_outcome((h, w)))
    assert np.array_equal(R.crf_labels(ch, image, params()), released)


def regions_image(h=375, w=500):
    """Three colour regions (left third red, middle green, right blue) with a bit of noise."""
    rng = np.random.default_rng(7)
    image = np.zeros((h, w, 3), np.uint8)
    cols = np.array_split(np.arange(w), 3)
    for c, idx in enumerate(cols):
        image[:, idx, c] = 200
    noise = rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), cols


def test_crf_smoke_on_a_real_size_image_follows_the_colour_regions():
    h, w = 375, 500
    image, cols = regions_image(h, w)
    # blurry, misplaced evidence: each class channel peaks over its region but spills into the next
    x = np.arange(w, dtype=np.float32)
    centres = [cols[i].mean() + 40 for i in range(3)]
    ch = np.stack([np.broadcast_to(np.exp(-((x - c) / 120) ** 2), (h, w)) for c in centres]).astype(np.float32)
    ch = np.concatenate([np.zeros((1, h, w), np.float32), ch])  # empty background channel
    ch = R.blur_channels(ch, 0.05, nan_guard=True)
    started = time.perf_counter()
    labels = R.crf_labels(ch, image, params())
    elapsed = time.perf_counter() - started
    truth = np.zeros((h, w), np.int64)
    for i, idx in enumerate(cols):
        truth[:, idx] = i + 1
    argmax_only = R.argmax_channels(ch)
    assert labels.shape == (h, w)
    assert (labels == truth).mean() > 0.97
    assert (labels == truth).mean() > (argmax_only == truth).mean() + 0.05  # the CRF snaps to colour edges
    assert elapsed < 15, f"CRF took {elapsed:.1f} s"


def test_crf_accepts_a_read_only_image_as_pil_gives_it():
    image = np.full((6, 7, 3), 90, np.uint8)
    image.setflags(write=False)
    ch = np.stack([np.zeros((6, 7), np.float32), np.ones((6, 7), np.float32)])
    assert np.all(R.crf_labels(ch, image, params()) == 1)


def test_crf_rejects_an_image_of_another_size():
    with pytest.raises(ValueError, match="CRF image"):
        R.crf_labels(np.zeros((2, 4, 5), np.float32), np.zeros((5, 4, 3), np.uint8), params())


@pytest.mark.parametrize("mode, expected", [("none", [[1, 0]]), ("blur", None), ("crf", None)])
def test_postprocess_variants_dispatch(mode, expected, monkeypatch):
    calls = []
    monkeypatch.setattr(R, "crf_labels", lambda ch, im, p: calls.append(ch.copy()) or np.zeros(ch.shape[1:], int))
    monkeypatch.setattr(R, "blur_channels", lambda ch, s, g: calls.append("blur") or ch[::-1].copy())
    ch = np.array([[[0.0, 0.9]], [[1.0, 0.1]]], dtype=np.float32)
    out = R.postprocess_channels(ch, np.zeros((1, 2, 3), np.uint8), params(postprocess=mode))
    if mode == "none":
        assert calls == [] and out.tolist() == expected
    elif mode == "blur":
        assert calls == ["blur"] and out.tolist() == [[0, 1]]  # argmax of the (reversed) blurred stack
    else:
        assert len(calls) == 1 and np.array_equal(calls[0], ch)  # CRF on the unblurred stack


# --- §6.7 relabel ---------------------------------------------------------------------------------------------


def test_relabel_collision_voc_person_then_aeroplane():
    """voc 2008_001821: classes [person(15), aeroplane(1)] → every aeroplane pixel ends up as person."""
    channels = np.array([[0, 1, 2, 2]])  # bg, person, aeroplane, aeroplane
    faithful = R.relabel_channels(channels, [15, 1], has_background=True, lookup_relabel=False)
    assert faithful.tolist() == [[0, 15, 15, 15]]
    clean = R.relabel_channels(channels, [15, 1], has_background=True, lookup_relabel=True)
    assert clean.tolist() == [[0, 15, 1, 1]]


def test_relabel_collision_chain_with_background():
    # ids [2, 3, 1]: channel 3 → 1, channel 2 → 3, then channel 1 and the former channel 3 → 2
    channels = np.array([[0, 1, 2, 3]])
    assert R.relabel_sequential(channels, [2, 3, 1], True).tolist() == [[0, 2, 3, 2]]
    assert R.relabel_lookup(channels, [2, 3, 1], True).tolist() == [[0, 2, 3, 1]]


def test_relabel_collision_without_background_channel():
    # no bg: channel i → id_i for i = 2, 1, 0; ids [4, 5, 1]: channel 2 → 1, then channel 1 (and it) → 5
    channels = np.array([[0, 1, 2]])
    assert R.relabel_sequential(channels, [4, 5, 1], False).tolist() == [[4, 5, 5]]
    assert R.relabel_lookup(channels, [4, 5, 1], False).tolist() == [[4, 5, 1]]


def test_sorted_class_lists_never_collide():
    channels = np.arange(4)[None]
    assert R.relabel_sequential(channels, [3, 8, 12], True).tolist() == [[0, 3, 8, 12]]
    assert R.relabel_sequential(channels, [3, 8, 12, 20], False).tolist() == [[3, 8, 12, 20]]


# --- the whole chain ------------------------------------------------------------------------------------------


def one_class_ring(p=3):
    """One class whose only low cell is the centre of a 3×3 grid: the threshold drops it, but on an 8×8
    image the centre grid point falls between pixels, so no pixel is exactly 0 → the background channel is
    all zero (constant)."""
    m = np.full((1, 1, p, p), 5.0, dtype=np.float32)
    m[0, 0, 1, 1] = 0.0
    return m


def test_faithful_constant_background_channel_turns_the_whole_image_to_background():
    image = np.full((8, 8, 3), 128, np.uint8)
    labels = R.refine_image(one_class_ring(), image, [12], params(), "always")
    assert labels.dtype == np.uint8 and labels.shape == (8, 8)
    assert np.all(labels == 0)


def test_nan_guard_keeps_the_class_when_the_background_channel_is_empty():
    image = np.full((8, 8, 3), 128, np.uint8)
    labels = R.refine_image(one_class_ring(), image, [12], params(nan_guard=True), "always")
    assert np.all(labels == 12)


def test_faithful_blur_only_with_a_constant_class_channel_takes_that_channel_everywhere():
    # class 2's map is constant → thresholded to 0 → blurred to NaN → torch.argmax picks it at every pixel
    maps = np.zeros((2, 1, 3, 3), np.float32)
    maps[0, 0] = np.arange(9).reshape(3, 3)
    maps[1, 0] = 1.0
    image = np.zeros((9, 9, 3), np.uint8)
    labels = R.refine_image(maps, image, [4, 9], params(postprocess="blur"), "always")
    assert np.all(labels == 9)
    labels = R.refine_image(maps, image, [4, 9], params(postprocess="blur", nan_guard=True), "always")
    assert set(np.unique(labels)) <= {0, 4} and (labels == 4).any()


def test_no_class_gives_all_background():
    labels = R.refine_image(np.zeros((0, 4, 21, 21), np.float32), np.zeros((6, 7, 3), np.uint8), [], params(), "always")
    assert labels.shape == (6, 7) and np.all(labels == 0)


def test_background_rule_in_the_chain_without_crf():
    # two halves: class A left, class B right, class C bottom-right corner only; none of the grid is empty
    maps = np.zeros((3, 1, 3, 3), np.float32)
    maps[0, 0, :, 0] = 1
    maps[1, 0, :, 2] = 1
    maps[2, 0, 2, 2] = 2
    image = np.zeros((5, 5, 3), np.uint8)
    p = params(postprocess="none")
    with_bg = R.refine_image(maps, image, [3, 5, 7], p, "always")
    without_bg = R.refine_image(maps, image, [3, 5, 7], p, "fewer_than_3")
    # middle column: all classes are 0 there → background with the bg channel, channel 0 (= id 3) without
    assert np.all(with_bg[:, 2] == 0)
    assert np.all(without_bg[:, 2] == 3)
    assert with_bg[0, 0] == 3 and with_bg[0, 4] == 5 and with_bg[4, 4] == 7


def test_refine_image_checks_shapes_and_params():
    image = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="class ids"):
        R.refine_image(np.zeros((2, 1, 3, 3), np.float32), image, [1], params(), "always")
    with pytest.raises(ValueError, match="lack"):
        R.refine_image(np.zeros((1, 1, 3, 3), np.float32), image, [1], {"postprocess": "none"}, "always")
    with pytest.raises(ValueError, match="postprocess"):
        R.refine_image(np.zeros((1, 1, 3, 3), np.float32), image, [1], params(postprocess="None"), "always")
