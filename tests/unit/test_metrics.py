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
