"""The §8 CLIP weak reward as pure functions (pnp_ovss.search.reward), on hand-made cases whose outcome is
known. The end-to-end case needs a scorer that recognises colours; a tiny random CLIP cannot, so it uses a
stub (stated below): logits = 100 × the mean of the prompt's colour channel in the masked image."""

from __future__ import annotations

import numpy as np
import pytest

from pnp_ovss.search.reward import (
    SettingReward,
    class_wins,
    masked_images,
    reward_mask,
    reward_masks,
    token_contrast,
)

S = 64


def test_reward_mask_follows_the_hot_region_and_is_empty_for_a_flat_map():
    m = np.zeros((8, 8), np.float32)
    m[:4, :4] = 1.0  # top-left quarter
    mask = reward_mask(m, 0.15, S)
    assert mask.shape == (S, S) and mask.dtype == bool
    assert mask[: S // 2 - 4, : S // 2 - 4].all() and not mask[S // 2 + 4 :, :].any() and not mask[:, S // 2 + 4 :].any()
    assert abs(mask.mean() - 0.25) < 0.05
    assert not reward_mask(np.full((8, 8), 3.0), 0.15, S).any()
    # the threshold is on the min-max normalised map: scaling the map changes nothing
    np.testing.assert_array_equal(reward_mask(m * 1e-6 + 5, 0.15, S), mask)


def test_the_blur_removes_an_isolated_cell_smaller_than_sigma():
    m = np.zeros((21, 21), np.float32)
    m[10, 10] = 1.0  # one cell of 64/21 ≈ 3 px; σ = 0.04·64 ≈ 2.6 px spreads it below 0.5
    assert not reward_mask(m, 0.15, S).any()


def test_masked_images_keep_the_masked_pixels_and_end_with_the_negative():
    image = np.random.default_rng(0).random((S, S, 3)).astype(np.float32)
    masks = np.zeros((2, S, S), bool)
    masks[0, :10] = True
    out = masked_images(image, masks)
    assert out.shape == (3, S, S, 3)
    np.testing.assert_array_equal(out[0, :10], image[:10])
    assert not out[0, 10:].any() and not out[1].any() and not out[2].any()
    with pytest.raises(ValueError, match="share S×S"):
        masked_images(image, np.zeros((1, 8, 8), bool))


def test_class_wins_worked_by_hand():
    # 2 classes. Masked image 0 prefers class 0 (p0 = 1/(1+e^-2) ≈ 0.88); masked image 1 prefers class 0 too
    # (p1 ≈ 0.12); the negative image is even (0.5, 0.5): class 0 wins, class 1 loses.
    logits = np.array([[2.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(class_wins(logits), [True, False])
    assert class_wins(logits).sum() == 1
    # a tie with the negative image is not a win (strictly greater)
    assert class_wins(np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])).sum() == 0
    with pytest.raises(ValueError, match=r"\[K \+ 1, K\]"):
        class_wins(np.zeros((2, 2)))


def test_token_contrast():
    a = np.zeros((2, 4, 4))
    a[:, :2] = 1
    assert token_contrast(a) == pytest.approx(1.0)
    b = np.zeros((2, 4, 4))
    b[0, :2], b[1, 2:] = 1, 1
    assert token_contrast(b) == 0.0
    assert token_contrast(a[:1]) == 0.0
    c = np.zeros((3, 2, 2))
    c[0, 0, 0] = c[1, 0, 0] = c[1, 0, 1] = c[2, 1, 1] = 1  # cos(0,1) = 1/√2, the others 0
    assert token_contrast(c) == pytest.approx((1 / np.sqrt(2)) / 3)


def colour_scorer(images: np.ndarray, channels: list[int]) -> np.ndarray:
    """STUB for CLIP (a tiny random CLIP cannot tell colours apart): the logit of prompt k for an image is
    100 × the mean of colour channel ``channels[k]`` over the image."""
    return 100 * images[..., channels].mean(axis=(1, 2))


def test_reward_ranks_the_right_masks_above_empty_and_whole_image_masks():
    """A red square on green: the class maps that point at the square (red) and at the rest (green) earn 2;
    empty maps earn 0; maps covering the whole image earn only the class that dominates it (green)."""
    image = np.zeros((S, S, 3), np.float32)
    image[..., 1] = 1.0
    image[16:48, 16:48] = [1.0, 0.0, 0.0]  # a red square, a quarter of the image
    p = 8
    red = np.zeros((p, p), np.float32)
    red[2:6, 2:6] = 1.0
    right = np.stack([red, 1.0 - red])
    rewards = {}
    for name, maps in {"right": right, "empty": np.zeros((2, p, p)), "whole": np.ones((2, p, p))}.items():
        masks = reward_masks(maps, 0.15, S)
        if name == "whole":
            masks[:] = True  # a flat map normalises to zeros; the whole-image case is set directly
        logits = colour_scorer(masked_images(image, masks), channels=[0, 1])
        rewards[name] = int(class_wins(logits).sum())
    assert rewards == {"right": 2, "empty": 0, "whole": 1}


def test_total_reward_sums_images_per_class_and_with_contrast():
    win_both = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    win_first = np.array([[2.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    flat = np.zeros((2, 4, 4))
    total = SettingReward()
    total.add_image([5, 7], win_both, flat, contrast=False)
    total.add_image([5, 9], win_first, flat, contrast=False)
    assert (total.total, total.images) == (3, 2)
    assert total.per_class() == {5: 1.0, 7: 1.0, 9: 0.0}
    overlapping = np.ones((2, 4, 4))  # contrast 1: the image's reward is scaled to 0
    disjoint = np.zeros((2, 4, 4))
    disjoint[0, :2], disjoint[1, 2:] = 1, 1
    scaled = SettingReward()
    scaled.add_image([5, 7], win_both, overlapping, contrast=True)
    scaled.add_image([5, 9], win_first, disjoint, contrast=True)
    assert scaled.total == pytest.approx(0 * 2 + 1 * 1)


def test_pipeline_masks_are_the_refine_output_of_each_class(tmp_path):
    """search.mask: pipeline — each class's pixels in the refine output at the setting, at the CLIP size."""
    from PIL import Image

    from pnp_ovss.datasets.folder import Demo
    from pnp_ovss.refine import refine_image
    from pnp_ovss.io import read_image
    from pnp_ovss.search.run import SearchImage, pipeline_masks

    demo = Demo()
    image_id = demo.image_ids()[0]
    rng = np.random.default_rng(0)
    maps = rng.random((1, 1, 2, 21, 21)).astype(np.float32)
    image = SearchImage(image_id, [1, 3], ["sky", "tree"], maps, np.zeros((S, S, 3), np.float32))
    refine = dict(postprocess="blur", blur_scale=0.05, crf_iterations=10, gaussian_sxy=3, gaussian_compat=7,
                  bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10, single_count_first_iteration=True,
                  lookup_relabel=True, nan_guard=True, always_background=False)
    masks = pipeline_masks(demo, image, maps[0, 0], 0.3, refine, S)
    labels = refine_image(maps[0, 0][:, None], read_image(demo.crf_image_path(image_id)), [1, 3],
                          {**refine, "threshold": 0.3}, demo.background_rule)
    small = np.asarray(Image.fromarray(labels).resize((S, S), Image.NEAREST))
    assert masks.shape == (2, S, S) and masks.dtype == bool
    np.testing.assert_array_equal(masks, np.stack([small == 1, small == 3]))
    assert masks.any()
