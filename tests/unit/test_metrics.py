import numpy as np
import pytest

from pnp_ovss.metrics import confusion, per_class_iou, summarise


def test_hand_computed_ious_with_predicted_only_and_absent_classes():
    # classes 0..3; class 2 is predicted but absent from GT; class 3 is absent from both; 255 ignored
    gt = np.array([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = np.array([[0, 2, 1, 1], [0, 0, 1, 2]])
    hist = confusion(gt, pred, 4)
    assert hist.shape == (4, 5)
    assert hist.sum() == 7  # the 255 pixel is ignored
    iou, gt_px, pred_px, tp = per_class_iou(hist)
    # class 0: tp 2, gt 3, pred 3 -> 2 / 4 ; class 1: tp 3, gt 4, pred 3 -> 3 / 4 ; class 2: 0 / 1
    assert iou[0] == pytest.approx(0.5)
    assert iou[1] == pytest.approx(0.75)
    assert iou[2] == 0.0
    assert np.isnan(iou[3])
    _, pnp = summarise(hist, ["a", "b", "c", "d"], "gt_present")
    _, mm = summarise(hist, ["a", "b", "c", "d"], "union_present")
    assert pnp["mIoU"] == pytest.approx((0.5 + 0.75) / 2)  # released code: classes with GT pixels
    assert mm["mIoU"] == pytest.approx((0.5 + 0.75 + 0.0) / 3)  # mmseg: class 2 counts with IoU 0
    assert pnp["pixel_accuracy"] == pytest.approx(5 / 7)


def test_void_predictions_are_wrong_but_add_to_no_class():
    gt = np.array([0, 1, 1])
    pred = np.array([0, 1, 9])  # 9 is no class of a 2-class protocol
    hist = confusion(gt, pred, 2)
    assert hist.tolist() == [[1, 0, 0], [0, 1, 1]]
    iou, *_ = per_class_iou(hist)
    assert iou.tolist() == [1.0, 0.5]


def _independent_miou(gt, pred, n, averaging):
    ious = []
    for c in range(n):
        valid = (gt >= 0) & (gt < n)
        inter = np.sum(valid & (gt == c) & (pred == c))
        union = np.sum(valid & ((gt == c) | (pred == c)))
        has_gt = np.sum(valid & (gt == c)) > 0
        if (averaging == "gt_present" and has_gt) or (averaging == "union_present" and union > 0):
            ious.append(inter / union)
    return np.mean(ious)


@pytest.mark.parametrize("averaging", ["gt_present", "union_present"])
def test_agrees_with_an_independent_computation_on_random_maps(averaging):
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 12))
        gt = rng.integers(0, n + 2, size=(17, 23))  # values >= n are ignored
        gt[rng.random(gt.shape) < 0.05] = 255
        pred = rng.integers(0, n, size=gt.shape)
        hist = confusion(gt, pred, n)
        _, s = summarise(hist, [str(i) for i in range(n)], averaging)
        assert s["mIoU"] == pytest.approx(_independent_miou(gt, pred, n, averaging))


def test_summing_shard_matrices_equals_one_matrix():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, (8, 9)) for _ in range(3)]
    preds = [rng.integers(0, 5, (8, 9)) for _ in range(3)]
    total = sum(confusion(g, p, 5) for g, p in zip(gts, preds))
    assert (total == confusion(np.stack(gts), np.stack(preds), 5)).all()


# --- Boundary IoU (Cheng et al., CVPR 2021) ------------------------------------------------------------

from pnp_ovss.metrics import boundary_counts, boundary_width, inner_boundary  # noqa: E402


def reference_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """The Boundary IoU reference code's mask_to_boundary, written out independently: pad with one zero pixel,
    erode with a 3x3 cross-free square ``dilation`` times (a pixel stays when its 8 neighbours and itself are
    set), crop, and keep the mask minus its erosion."""
    h, w = mask.shape
    dilation = max(1, int(round(ratio * np.sqrt(h * h + w * w))))
    m = np.pad(mask.astype(bool), 1, constant_values=False)
    for _ in range(dilation):
        p = np.pad(m, 1, constant_values=True)  # cv2's default erosion border: outside never erodes
        nxt = np.ones_like(m)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt &= p[1 + dy: 1 + dy + m.shape[0], 1 + dx: 1 + dx + m.shape[1]]
        m = nxt
    return mask.astype(bool) & ~m[1:-1, 1:-1]


def reference_counts(gt, pred, n_class):
    valid = (gt >= 0) & (gt < n_class)
    inter, union = np.zeros(n_class, np.int64), np.zeros(n_class, np.int64)
    for c in range(n_class):
        g, p = reference_boundary(gt == c), reference_boundary(pred == c)
        inter[c], union[c] = np.sum(g & p & valid), np.sum((g | p) & valid)
    return inter, union


def test_the_band_is_two_percent_of_the_diagonal_and_at_least_one_pixel():
    assert boundary_width(375, 500) == 12  # 0.02 * 625 = 12.5 -> 12 (round half to even, as Python's round)
    assert boundary_width(1024, 2048) == 46
    assert boundary_width(10, 10) == 1 and boundary_width(1, 1) == 1


def test_hand_computed_bands_and_boundary_iou():
    # a 4x4 square in a 10x10 image: band width 1 -> the square's 12 edge pixels; the background's band is
    # the image border (36 pixels) and the 20 pixels around the square
    gt = np.zeros((10, 10), np.int64)
    gt[3:7, 3:7] = 1
    band = inner_boundary(gt == 1, 1)
    assert band.sum() == 12 and not band[4:6, 4:6].any()
    assert inner_boundary(gt == 0, 1).sum() == 36 + 20
    inter, union = boundary_counts(gt, gt, 2)
    assert list(inter) == list(union) == [56, 12]  # a perfect prediction: Boundary IoU 1
    # the square predicted one column to the right: its band is 12 pixels, 6 of them on the true band
    pred = np.zeros_like(gt)
    pred[3:7, 4:8] = 1
    inter, union = boundary_counts(gt, pred, 2)
    assert inter[1] == 6 and union[1] == 18
    # a pixel without ground truth (255: no class of this protocol) counts in no band: the predicted square's
    # corner (3, 7) is on its band only; ignored, the union loses it (the true background's band moves too)
    gt_ignored = gt.copy()
    gt_ignored[3, 7] = 255
    inter2, union2 = boundary_counts(gt_ignored, pred, 2)
    assert inter2[1] == inter[1] and union2[1] == union[1] - 1


@pytest.mark.parametrize("shape, n_class, seed", [((40, 60), 3, 0), ((200, 130), 5, 1), ((375, 500), 4, 2)])
def test_boundary_counts_equal_the_reference_code_on_random_label_maps(shape, n_class, seed):
    rng = np.random.default_rng(seed)
    # blobby maps (upsampled noise), some ignored pixels, predictions with labels outside the protocol
    small = rng.integers(0, n_class, (shape[0] // 10 + 1, shape[1] // 10 + 1))
    gt = np.kron(small, np.ones((10, 10), np.int64))[: shape[0], : shape[1]]
    gt[rng.random(shape) < 0.01] = 255
    pred = np.roll(gt, (3, -5), axis=(0, 1)) % (n_class + 1)
    inter, union = boundary_counts(gt, pred, n_class)
    ref_inter, ref_union = reference_counts(gt, pred, n_class)
    np.testing.assert_array_equal(inter, ref_inter)
    np.testing.assert_array_equal(union, ref_union)
    assert (inter <= union).all() and union.sum() > 0


def test_summarise_gives_mbiou_over_the_scored_classes():
    hist = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    table, pnp = summarise(hist, ["a", "b", "c"], "gt_present", (np.array([2, 1, 5]), np.array([4, 4, 0])))
    assert list(table["boundary_iou"][:2]) == [0.5, 0.25] and np.isnan(table["boundary_iou"][2])
    assert pnp["mBIoU"] == pytest.approx(0.375)
    _, without = summarise(hist, ["a", "b", "c"], "gt_present")
    assert "mBIoU" not in without and without["mIoU"] == pnp["mIoU"]
