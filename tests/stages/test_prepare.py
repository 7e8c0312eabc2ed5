"""`pnp-ovss prepare` on tiny copies of the official downloads (tests/fabricate_downloads.py).

Every derived file is compared with values computed here from the conversions' definitions (the id tables are
written out below, not imported from pnp_ovss.prepare); copied files must equal the archive members byte for byte.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import SNAKEMAKE, ROOT
from support.fabricate_downloads import fabricate_downloads
from pnp_ovss.cli import main

# COCO ids (1-based) that COCO-Stuff 164k never uses: 11 of 1..182, so 171 classes remain
UNUSED_COCO_IDS = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]
# mmsegmentation's pascal_context.py `_mapping` as it is written there (unsorted); the converter sorts it
CONTEXT_MAPPING_AS_WRITTEN = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454, 295,
    296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347,
    220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]
# the PASCAL Context 459-label names of those ids (labels.txt of the Context release)
CONTEXT_NAMES = {
    2: "aeroplane", 9: "bag", 18: "bed", 19: "bedclothes", 22: "bench", 23: "bicycle", 25: "bird", 31: "boat",
    33: "book", 34: "bottle", 44: "building", 45: "bus", 46: "cabinet", 59: "car", 65: "cat", 68: "ceiling",
    72: "chair", 80: "cloth", 85: "computer", 98: "cow", 104: "cup", 105: "curtain", 113: "dog", 115: "door",
    144: "fence", 158: "floor", 159: "flower", 162: "food", 187: "grass", 189: "ground", 207: "horse",
    220: "keyboard", 232: "light", 258: "motorbike", 259: "mountain", 260: "mouse", 284: "person", 295: "plate",
    296: "platform", 308: "pottedplant", 324: "road", 326: "rock", 347: "sheep", 349: "shelves", 354: "sidewalk",
    355: "sign", 360: "sky", 366: "snow", 368: "sofa", 397: "table", 415: "track", 416: "train", 420: "tree",
    424: "truck", 427: "tvmonitor", 440: "wall", 445: "water", 454: "window", 458: "wood",
}


def prepare(*args):
    """Run the CLI in-process; return (exit code, stdout+stderr text)."""
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["prepare", "--quiet", *args])
    return code, out.getvalue()


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".pnp-ovss-prepare" not in p.parts}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    root = tmp_path_factory.mktemp("downloads")
    return root, fabricate_downloads(root, n=3)


@pytest.fixture(scope="module")
def prepared(downloads, tmp_path_factory):
    dl, info = downloads
    data_root = tmp_path_factory.mktemp("data")
    code, out = prepare("--dataset", "all", "--downloads", str(dl), "--data-root", str(data_root), "--no-verify",
                        "--jobs", "2")
    assert code == 0, out
    return data_root, info, out


# --- the files -----------------------------------------------------------------------------------------


def test_voc_val_images_annotations_and_lists_are_the_archive_members(prepared):
    data_root, info, _ = prepared
    voc = info["voc"]
    for image_id in voc["val"]:
        for member in (f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg", f"VOCdevkit/VOC2012/SegmentationClass/{image_id}.png"):
            assert (data_root / member).read_bytes() == voc["members"][member]
    for name in ("train.txt", "val.txt", "trainval.txt"):
        member = f"VOCdevkit/VOC2012/ImageSets/Segmentation/{name}"
        assert (data_root / member).read_bytes() == voc["members"][member]
    # only the val split is extracted
    assert not (data_root / f"VOCdevkit/VOC2012/JPEGImages/{voc['train'][0]}.jpg").exists()
    assert not list(data_root.rglob("*.xml"))


def test_context_masks_equal_the_class_mask_mapped_by_mmsegmentations_table(prepared):
    data_root, info, _ = prepared
    table = sorted(CONTEXT_MAPPING_AS_WRITTEN)
    assert len(table) == 60
    psc = info["psc"]
    for stem in psc["val"]:
        spec = psc["annotations"][stem]
        expected_459 = np.zeros(spec["shape"], dtype=np.int64)
        for category_id, mask in spec["annotations"]:  # file order, a later annotation wins
            expected_459[mask] = category_id
        expected = np.vectorize(table.index)(expected_459)
        got = png(data_root / f"VOCdevkit/VOC2010/SegmentationClassContext/{stem}.png")
        assert got.dtype == np.uint8 and np.array_equal(got, expected), stem
        # the overlap of sky (earlier) and person (later) is person
        assert table.index(284) in got and table.index(360) in got
        jpg = f"VOCdevkit/VOC2010/JPEGImages/{stem}.jpg"
        assert (data_root / jpg).read_bytes() == psc["members"][jpg]
    lists = data_root / "VOCdevkit/VOC2010/ImageSets/SegmentationContext"
    assert (lists / "val.txt").read_text() == "".join(f"{s}\n" for s in sorted(psc["val"]))
    assert (lists / "train.txt").read_text() == "".join(f"{s}\n" for s in sorted(psc["train"]))
    assert not (data_root / f"VOCdevkit/VOC2010/JPEGImages/{psc['train'][0]}.jpg").exists()


def test_context_table_names_are_the_psc_class_list():
    from pnp_ovss.vocab import load_vocabulary

    table = sorted(CONTEXT_MAPPING_AS_WRITTEN)
    assert [CONTEXT_NAMES[i] for i in table[1:]] == list(load_vocabulary("psc").names)


def test_ade20k_validation_is_extracted_as_is(prepared):
    data_root, info, _ = prepared
    ade = info["ade20k"]
    for stem in ade["val"]:
        for member in (f"ADEChallengeData2016/images/validation/{stem}.jpg",
                       f"ADEChallengeData2016/annotations/validation/{stem}.png"):
            assert (data_root / member).read_bytes() == ade["members"][member]
    assert (data_root / "ADEChallengeData2016/objectInfo150.txt").is_file()
    assert not (data_root / "ADEChallengeData2016/images/training").exists()


def test_coco_stuff_label_train_ids_are_the_171_used_ids_in_order(prepared):
    data_root, info, _ = prepared
    used = [c for c in range(1, 183) if c not in UNUSED_COCO_IDS]
    assert len(used) == 171
    for stem, raw in info["coco"]["raw"].items():
        expected = np.full(raw.shape, 255, dtype=np.int64)
        for train_id, coco_id in enumerate(used):
            expected[raw == coco_id - 1] = train_id
        folder = data_root / "coco_stuff164k/annotations/val2017"
        assert np.array_equal(png(folder / f"{stem}_labelTrainIds.png"), expected)
        assert np.array_equal(png(folder / f"{stem}.png"), raw)
        # person (COCO 1) -> 0, dog (18) -> 16, grass (124) -> 112 as counted by hand
        assert expected[raw == 0].max(initial=0) == 0 and set(expected[raw == 17].tolist()) <= {16}
        assert set(expected[raw == 123].tolist()) <= {112}


def test_coco_object_instance_train_ids_follow_the_peers_converter(prepared):
    data_root, info, _ = prepared
    things = [c for c in range(1, 91) if c not in UNUSED_COCO_IDS]
    assert len(things) == 80
    for stem, raw in info["coco"]["raw"].items():
        expected = np.zeros(raw.shape, dtype=np.int64)  # stuff and unlabeled (255) become background
        for k, coco_id in enumerate(things):
            expected[raw == coco_id - 1] = k + 1
        got = png(data_root / f"coco_stuff164k/annotations/val2017/{stem}_instanceTrainIds.png")
        assert np.array_equal(got, expected)
        assert 255 not in got and 80 in got  # toothbrush (COCO 90) is the 80th thing


def test_cityscapes_val_images_and_label_ids_are_copied_by_city(prepared):
    data_root, info, _ = prepared
    city = info["cityscapes"]
    for stem in city["val"]:
        town = stem.split("_", 1)[0]
        for member, source in ((f"leftImg8bit/val/{town}/{stem}_leftImg8bit.png", city["images"]),
                               (f"gtFine/val/{town}/{stem}_gtFine_labelIds.png", city["labels"])):
            assert (data_root / "cityscapes" / member).read_bytes() == source[member]
    written = sorted(p.relative_to(data_root / "cityscapes").as_posix() for p in (data_root / "cityscapes").rglob("*.*"))
    assert len(written) == 2 * len(city["val"])  # no train/test image, no instanceIds/color/polygons
    from pnp_ovss.datasets.benchmarks import Cityscapes

    ds = Cityscapes(data_root)
    assert ds.image_ids() == sorted(city["val"])
    raw = png(data_root / "cityscapes" / f"gtFine/val/frankfurt/{city['val'][0]}_gtFine_labelIds.png")
    gt = ds.ground_truth(city["val"][0], "mmseg")
    assert np.array_equal(gt[raw == 7], np.zeros((raw == 7).sum())) and (gt[raw == 33] == 18).all()
    assert (gt[raw == 0] == 255).all() and (gt[raw == 9] == 255).all()


def test_coco_images_and_instances_json_are_where_the_adapters_read_them(prepared):
    data_root, info, _ = prepared
    coco = info["coco"]
    for member, data in coco["images"].items():
        assert (data_root / "coco_stuff164k/images" / member).read_bytes() == data
    assert (data_root / "coco_stuff164k/annotations/instances_val2017.json").read_bytes() == coco["instances"]
    from pnp_ovss.datasets.benchmarks import COCOObject

    ds = COCOObject(data_root)
    assert ds.image_ids() == coco["ids"]  # the instances file's order
    gt = ds.ground_truth(coco["ids"][0], "pnp")
    assert set(np.unique(gt).tolist()) == {0, 1, 17}


def test_prepare_ends_with_datasets_check_of_each_benchmark(prepared):
    _, _, out = prepared
    for name in ("voc", "psc", "ade20k", "coco_object", "coco_stuff", "cityscapes"):
        assert f"check: {name}: 3 images" in out
    assert "WARNING: 3 images; the complete voc split has 1449" in out
    assert "ground truth (mmseg)" in out


def test_workflow_dry_run_on_the_prepared_tree(prepared, repo_copy):
    data_root, _, _ = prepared
    for dataset in ("psc", "coco_stuff"):
        proc = subprocess.run(SNAKEMAKE + ["-n", "--cores", "1", "--config",
                               f"dataset={dataset}", f"data_root={data_root}"],
                              cwd=repo_copy, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "gradcam" in proc.stdout and "views" in proc.stdout


# --- reruns, checks, errors ----------------------------------------------------------------------------


def test_rerun_writes_nothing_and_force_rewrites_everything(prepared, downloads):
    data_root, _, _ = prepared
    dl, _ = downloads
    before = tree_files(data_root)
    code, out = prepare("--dataset", "coco_stuff", "--downloads", str(dl), "--data-root", str(data_root),
                        "--no-verify", "--jobs", "1", "--no-check")
    assert code == 0 and "0 files written, 10 already there" in out
    code, out = prepare("--dataset", "coco_stuff", "--downloads", str(dl), "--data-root", str(data_root),
                        "--no-verify", "--jobs", "1", "--no-check", "--force")
    assert code == 0 and "10 files written, 0 already there" in out
    assert tree_files(data_root) == before


def test_extracted_folders_give_the_same_tree_as_the_archives(prepared, downloads, tmp_path):
    data_root, _, _ = prepared
    dl, _ = downloads
    ex = tmp_path / "extracted"
    ex.mkdir()
    with tarfile.open(dl / "VOCtrainval_11-May-2012.tar") as tf:
        tf.extractall(ex, filter="data")
    with tarfile.open(dl / "VOCtrainval_03-May-2010.tar") as tf:
        tf.extractall(ex, filter="data")
    shutil.copy(dl / "trainval_merged.json", ex)
    for name, dest in (("ADEChallengeData2016.zip", ex), ("val2017.zip", ex),
                       ("stuffthingmaps_trainval2017.zip", ex / "stuffthingmaps_trainval2017"),
                       ("annotations_trainval2017.zip", ex), ("leftImg8bit_trainvaltest.zip", ex),
                       ("gtFine_trainvaltest.zip", ex / "gtFine_trainvaltest")):
        with zipfile.ZipFile(dl / name) as zf:
            zf.extractall(dest)
    out_root = tmp_path / "data"
    code, out = prepare("--dataset", "all", "--downloads", str(ex), "--data-root", str(out_root), "--jobs", "1",
                        "--no-check")
    assert code == 0, out
    assert f"{ex}/stuffthingmaps_trainval2017" in out
    assert tree_files(out_root) == tree_files(data_root)


def test_published_checksum_is_checked_once(downloads, tmp_path, monkeypatch):
    from pnp_ovss.prepare import sources

    dl, _ = downloads
    import dataclasses
    import hashlib

    real = hashlib.md5((dl / "ADEChallengeData2016.zip").read_bytes()).hexdigest()
    wrong = dataclasses.replace(sources.DOWNLOADS["ade20k"], md5="0" * 32)
    monkeypatch.setitem(sources.DOWNLOADS, "ade20k", wrong)
    code, out = prepare("--dataset", "ade20k", "--downloads", str(dl), "--data-root", str(tmp_path), "--no-check")
    assert code == 1
    assert f"{dl}/ADEChallengeData2016.zip: md5 {real}, expected {'0' * 32}" in out
    assert not (tmp_path / "ADEChallengeData2016").exists()  # nothing written

    monkeypatch.setitem(sources.DOWNLOADS, "ade20k", dataclasses.replace(wrong, md5=real))
    code, out = prepare("--dataset", "ade20k", "--downloads", str(dl), "--data-root", str(tmp_path), "--no-check")
    assert code == 0 and "checking the md5" in out
    # verified once: a rerun does not read the archive for its checksum again
    monkeypatch.setattr(sources, "md5_of", lambda path: pytest.fail("md5 computed twice"))
    code, out = prepare("--dataset", "ade20k", "--downloads", str(dl), "--data-root", str(tmp_path), "--no-check")
    assert code == 0 and "checking the md5" not in out


def test_published_size_mismatch_says_truncated(downloads, tmp_path):
    dl, _ = downloads
    own = tmp_path / "dl"
    own.mkdir()
    for name in ("val2017.zip", "stuffthingmaps_trainval2017.zip", "annotations_trainval2017.zip"):
        shutil.copy(dl / name, own)
    code, out = prepare("--dataset", "coco_object", "--downloads", str(own), "--data-root", str(tmp_path / "d"))
    assert code == 1
    size = (own / "val2017.zip").stat().st_size
    assert f"{own}/val2017.zip: {size} bytes, expected 815585330 for the official val2017.zip (truncated)" in out


@pytest.mark.parametrize("archive", ["VOCtrainval_11-May-2012.tar", "stuffthingmaps_trainval2017.zip"])
def test_truncated_archive_is_an_error_naming_it(downloads, tmp_path, archive):
    dl, _ = downloads
    own = tmp_path / "dl"
    shutil.copytree(dl, own)
    data = (own / archive).read_bytes()
    (own / archive).write_bytes(data[: len(data) * 2 // 3])
    dataset = "voc" if archive.endswith(".tar") else "coco_stuff"
    code, out = prepare("--dataset", dataset, "--downloads", str(own), "--data-root", str(tmp_path / "d"), "--no-verify")
    assert code == 1
    assert f"{own}/{archive}" in out and "truncated" in out
    assert not (tmp_path / "d" / ("VOCdevkit" if dataset == "voc" else "coco_stuff164k")).exists()


def test_missing_member_is_named_before_anything_is_written(downloads, tmp_path):
    dl, info = downloads
    own = tmp_path / "dl"
    shutil.copytree(dl, own)
    victim = f"val2017/{info['coco']['ids'][1]}.png"
    with zipfile.ZipFile(dl / "stuffthingmaps_trainval2017.zip") as src, \
            zipfile.ZipFile(own / "stuffthingmaps_trainval2017.zip", "w") as dst:
        for item in src.infolist():
            if item.filename != victim:
                dst.writestr(item, src.read(item))
    code, out = prepare("--dataset", "coco_stuff", "--downloads", str(own), "--data-root", str(tmp_path / "d"), "--no-verify")
    assert code == 1
    assert f"{own}/stuffthingmaps_trainval2017.zip: 1 expected member(s) missing" in out and victim in out
    assert not (tmp_path / "d" / "coco_stuff164k").exists()


def test_missing_download_says_where_it_looked_and_where_to_get_it(tmp_path):
    code, out = prepare("--dataset", "psc", "--downloads", str(tmp_path), "--data-root", str(tmp_path / "d"))
    assert code == 1
    assert f"{tmp_path}/VOCtrainval_03-May-2010.tar" in out
    assert "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar" in out


def test_unknown_context_category_is_an_error_naming_the_image(downloads, tmp_path):
    dl, info = downloads
    own = tmp_path / "dl"
    shutil.copytree(dl, own)
    data = json.loads((own / "trainval_merged.json").read_text())
    data["annos_segmentation"][-1]["category_id"] = 3  # not one of the 59
    (own / "trainval_merged.json").write_text(json.dumps(data))
    code, out = prepare("--dataset", "psc", "--downloads", str(own), "--data-root", str(tmp_path / "d"), "--no-verify",
                        "--jobs", "1")
    assert code == 1 and "category ids [3] are not among the 59 PASCAL Context classes" in out
    assert "trainval_merged.json image" in out


def test_killed_prepare_resumes_with_only_the_missing_files(downloads, prepared, tmp_path):
    dl, info = downloads
    data_root = tmp_path / "d"
    cmd = [sys.executable, "-m", "pnp_ovss.cli", "prepare", "--dataset", "coco_stuff", "--downloads", str(dl),
           "--data-root", str(data_root), "--no-verify", "--jobs", "1", "--quiet", "--no-check"]
    env = {**os.environ, "PNP_OVSS_FAULT": "prepare:2:kill", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    written = [p for p in data_root.rglob("*") if p.is_file()]
    assert len(written) == 2 * 3  # two images: jpg, raw map, labelTrainIds
    assert not list(data_root.rglob("*.tmp"))
    # the instances file (the image list) comes last: a killed run leaves none
    assert not (data_root / "coco_stuff164k/annotations/instances_val2017.json").exists()
    env.pop("PNP_OVSS_FAULT")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "3 images — 4 files written, 6 already there" in proc.stdout
    full, _, _ = prepared
    expected = {k: v for k, v in tree_files(full).items()
                if k.startswith("coco_stuff164k") and not k.endswith("_instanceTrainIds.png")}
    assert tree_files(data_root) == expected
    record = json.loads((data_root / ".pnp-ovss-prepare" / "coco_stuff.json").read_text())
    assert record["images"] == 3 and record["files_written"] == 4 and record["expected_images"] == 5000
