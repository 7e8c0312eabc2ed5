import filecmp

import numpy as np
import pandas as pd
import pytest

from pnp_ovss.config import normalise
from pnp_ovss.datasets import get_dataset
from pnp_ovss.datasets.folder import demo_root
from pnp_ovss.demo import write_demo
from pnp_ovss.entries import entry_path, write_sealed_bytes
from pnp_ovss.layout import TABLE_COLUMNS
from pnp_ovss.stages.evaluate import run_evaluate_job, save_shard, write_tables
from pnp_ovss.io import label_png_bytes
from pnp_ovss.protocols import get_protocol


def test_demo_set_is_reproduced_bit_for_bit(tmp_path):
    write_demo(tmp_path)
    shipped = demo_root()
    for sub in ("images", "annotations"):
        names = sorted(p.name for p in (shipped / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / sub).iterdir()) and len(names) == 6
        match, mismatch, errors = filecmp.cmpfiles(shipped / sub, tmp_path / sub, names, shallow=False)
        assert not mismatch and not errors
    assert (shipped / "classes.txt").read_text() == (tmp_path / "classes.txt").read_text()


@pytest.fixture
def demo():
    return get_dataset(normalise({}))


def write_mask(refine_dir, image_id, labels):
    """A label map entry of a refine stage folder (key = the image id)."""
    write_sealed_bytes(entry_path(refine_dir, "refine", image_id), label_png_bytes(labels))


def evaluate(demo, ids, prot, refine_dir, **kw):
    return run_evaluate_job(demo, ids, prot, upstream_keys={i: i for i in ids}, upstream_dir=refine_dir, **kw)


def _score(demo, masks_dir, ids, protocol_name, tmp_path, tag):
    prot = get_protocol("demo", protocol_name, demo.vocabulary)
    hist, n, skipped, made_from = evaluate(demo, ids, prot, masks_dir)
    assert made_from is not None  # every label map's digest known
    save_shard(tmp_path / f"{tag}.npz", hist, n, skipped, made_from)
    row = write_tables(
        [tmp_path / f"{tag}.npz"], prot, "demo", {"refine.hash": "x"},
        tmp_path / f"{tag}_miou.csv", tmp_path / f"{tag}_pc.csv", tmp_path / f"{tag}_skipped.csv",
    )
    return row, pd.read_csv(tmp_path / f"{tag}_pc.csv")


def test_demo_masks_score_100_against_themselves(demo, tmp_path):
    ids = demo.image_ids()
    for i in ids:
        write_mask(tmp_path / "self", i, demo.ground_truth(i, "pnp"))
    row, per_class = _score(demo, tmp_path / "self", ids, "pnp", tmp_path, "self")
    assert row["mIoU"] == 100.0 and row["pixel_accuracy"] == 100.0 and row["n_images"] == 6
    assert row["mBIoU"] == 100.0 and (per_class["boundary_iou"].dropna() == 100.0).all()
    assert tuple(row)[: len(TABLE_COLUMNS)] == TABLE_COLUMNS  # what the dataset-level view's key names
    assert row["n_classes_scored"] == 6  # six classes, no background pixel in the demo
    assert row["refine.hash"] == "x"


def test_demo_masks_shifted_by_rows_give_the_independently_counted_ious(demo, tmp_path):
    ids = demo.image_ids()
    inter = np.zeros(7)
    union = np.zeros(7)
    for i in ids:
        gt = demo.ground_truth(i, "pnp")
        shifted = np.roll(gt, 12, axis=0)
        write_mask(tmp_path / "shift", i, shifted)
        for c in range(7):
            inter[c] += np.sum((gt == c) & (shifted == c))
            union[c] += np.sum((gt == c) | (shifted == c))
    expected = inter[1:] / union[1:]
    row, per_class = _score(demo, tmp_path / "shift", ids, "mmseg", tmp_path, "shift")
    assert row["mIoU"] == pytest.approx(100 * expected.mean(), abs=1e-3)
    got = per_class.set_index("class_name").loc[["sky", "mountain", "tree", "grass", "water", "sand"], "iou"]
    assert got.to_numpy() == pytest.approx(100 * expected, abs=1e-3)
    assert 0 < row["mIoU"] < 100
    # Boundary IoU, counted independently: bands of 2 % of the diagonal by explicit erosion
    b_inter, b_union = np.zeros(7), np.zeros(7)
    for i in ids:
        gt = demo.ground_truth(i, "pnp")
        shifted = np.roll(gt, 12, axis=0)
        d = max(1, round(0.02 * np.hypot(*gt.shape)))
        for c in range(7):
            g, p = band(gt == c, d), band(shifted == c, d)
            b_inter[c] += np.sum(g & p)
            b_union[c] += np.sum(g | p)
    scored = b_union[1:] > 0
    expected_b = (b_inter[1:] / np.where(b_union[1:] > 0, b_union[1:], 1))[scored]
    assert row["mBIoU"] == pytest.approx(100 * expected_b.mean(), abs=1e-3)
    assert 0 < row["mBIoU"] < row["mIoU"]  # boundaries are where a shift hurts


def band(mask, d):
    """The mask minus its erosion by a (2d+1)-square, the outside of the image counting as background."""
    padded = np.pad(mask, d, constant_values=False)
    eroded = np.ones_like(mask)
    for dy in range(2 * d + 1):
        for dx in range(2 * d + 1):
            eroded &= padded[dy: dy + mask.shape[0], dx: dx + mask.shape[1]]
    return mask & ~eroded


def test_missing_mask_fails_or_is_skipped(demo, tmp_path):
    ids = demo.image_ids()
    for i in ids[1:]:
        write_mask(tmp_path / "m", i, demo.ground_truth(i, "pnp"))
    prot = get_protocol("demo", "pnp", demo.vocabulary)
    with pytest.raises(Exception, match=f"{ids[0]}.png: predicted mask missing"):
        evaluate(demo, ids, prot, tmp_path / "m")
    hist, n, skipped, made_from = evaluate(demo, ids, prot, tmp_path / "m", on_error="skip")
    assert n == 5 and [s["image_id"] for s in skipped] == [ids[0]] and made_from is None


def test_a_shard_result_from_before_boundary_iou_is_recounted(demo, tmp_path):
    """An evaluation job's result without the boundary counts (made by an earlier version, sealed and intact)
    is not reused: the plan sets it aside and the job recounts it, so mBIoU is never missing or made up."""
    import io

    from pnp_ovss.entries import check_entry, write_sealed_bytes

    buf = io.BytesIO()
    np.savez(buf, hist=np.eye(3, 4, dtype=np.int64), n_images=np.int64(1), skipped_ids=np.array([], str),
             skipped_reasons=np.array([], str))
    old = tmp_path / "shards" / "shard-0000-0123456789abcdef.npz"
    write_sealed_bytes(old, buf.getvalue())
    problem, digest = check_entry("evaluate", old)
    assert digest is None and problem == "it was made before boundary_intersection, boundary_union were counted"
    ids = demo.image_ids()
    for i in ids:
        write_mask(tmp_path / "self", i, demo.ground_truth(i, "pnp"))
    prot = get_protocol("demo", "pnp", demo.vocabulary)
    counts, n, skipped, made_from = evaluate(demo, ids, prot, tmp_path / "self")
    new = tmp_path / "shards" / "shard-0000-fedcba9876543210.npz"
    save_shard(new, counts, n, skipped, made_from)
    assert check_entry("evaluate", new)[0] is None
