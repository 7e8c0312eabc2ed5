import shutil

import numpy as np
import pytest
from PIL import Image

from pnp_ovss.config import normalise
from pnp_ovss.datasets import get_dataset
from pnp_ovss.datasets.benchmarks import rasterise_instances
from pnp_ovss.errors import DatasetError
from pnp_ovss.io import read_label_png
from pnp_ovss.ordering import faithful_order, make_shards
from pnp_ovss.protocols import get_protocol


def ds(root, name, **kw):
    return get_dataset(normalise({"dataset": name, "data_root": str(root), **kw}))


def test_voc_pnp_scores_boundaries_as_background_and_mmseg_ignores_them(mini_tree):
    root, ids = mini_tree
    voc = ds(root, "voc")
    raw = read_label_png(voc.annotation_path(ids["voc"][0]))
    assert Image.open(voc.annotation_path(ids["voc"][0])).mode == "P" and (raw == 255).any()
    pnp = voc.ground_truth(ids["voc"][0], "pnp")
    assert not (pnp == 255).any() and (pnp[raw == 255] == 0).all()
    assert (voc.ground_truth(ids["voc"][0], "mmseg") == raw).all()
    voc20 = ds(root, "voc", protocol="mmseg", mmseg_variant="voc20")
    g20 = voc20.ground_truth(ids["voc"][0], "mmseg")
    assert (g20[raw == 0] == 255).all() and (g20[(raw > 0) & (raw < 255)] == raw[(raw > 0) & (raw < 255)] - 1).all()


def test_psc_pc60_keeps_background_and_pc59_reduces_it(mini_tree):
    root, ids = mini_tree
    i = ids["psc"][1]
    raw = read_label_png(ds(root, "psc").annotation_path(i))
    assert (ds(root, "psc").ground_truth(i, "pnp") == raw).all()
    assert (ds(root, "psc", mmseg_variant="pc60").ground_truth(i, "mmseg") == raw).all()
    g59 = ds(root, "psc", mmseg_variant="pc59").ground_truth(i, "mmseg")
    assert (g59[raw == 0] == 255).all() and (g59[raw > 0] == raw[raw > 0] - 1).all()


def test_ade_pnp_counts_other_and_mmseg_reduces_zero_label(mini_tree):
    root, ids = mini_tree
    ade = ds(root, "ade20k")
    i = ids["ade20k"][0]
    raw = read_label_png(ade.annotation_path(i))
    assert (raw == 0).any() and (ade.ground_truth(i, "pnp") == raw).all()
    mm = ade.ground_truth(i, "mmseg")
    assert (mm[raw == 0] == 255).all() and (mm[raw > 0] == raw[raw > 0] - 1).all()
    assert ade.unnormalised_input and ade.background_rule == "fewer_than_3"


def test_coco_stuff_raw_ids_shift_by_one_and_unlabeled_is_zero(mini_tree):
    root, ids = mini_tree
    cs = ds(root, "coco_stuff")
    i = ids["coco_stuff"][0]
    raw = read_label_png(cs.annotation_path(i, "pnp"))
    gt = cs.ground_truth(i, "pnp")
    assert (gt[raw == 255] == 0).all() and (gt[raw != 255] == raw[raw != 255] + 1).all()
    assert set(np.unique(gt)) == {0, 1, 18, 124}  # unlabeled, person, dog, grass


def test_cityscapes_label_ids_map_to_the_19_train_ids_as_cityscapesscripts(mini_tree):
    # cityscapesscripts' helpers/labels.py, written out: (label id, train id) of every evaluated class
    evaluated = [(7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9), (23, 10),
                 (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18)]
    from pnp_ovss.datasets.benchmarks import cityscapes_dataset_id_table

    table = cityscapes_dataset_id_table()
    for label_id in range(34):
        want = dict(evaluated).get(label_id)
        assert table[label_id] == (0 if want is None else want + 1), label_id
    root, ids = mini_tree
    city = ds(root, "cityscapes", protocol="mmseg")
    assert ids["cityscapes"] == city.image_ids() and city.image_path(ids["cityscapes"][0]).parent.name in ("frankfurt", "lindau")
    i = ids["cityscapes"][0]
    raw = read_label_png(city.annotation_path(i))
    mm, pnp = city.ground_truth(i, "mmseg"), city.ground_truth(i, "pnp")
    assert set(np.unique(raw).tolist()) == {4, 7, 9, 23, 26}
    assert (mm[raw == 7] == 0).all() and (mm[raw == 26] == 13).all() and (mm[raw == 23] == 10).all()
    assert (mm[np.isin(raw, [4, 9])] == 255).all() and (pnp[np.isin(raw, [4, 9])] == 0).all()
    assert (pnp[raw == 26] == 14).all() and city.vocabulary.name(14) == "car" and len(city.vocabulary) == 19
    assert city.background_rule == "fewer_than_3" and city.image_size(i) == (32, 64)
    prot = get_protocol("cityscapes", "mmseg", city.vocabulary)
    assert prot.variant == "city19" and prot.n_class == 19 and prot.class_names[0] == "road"


@pytest.mark.parametrize("name", ["coco_stuff", "coco_object", "voc", "psc", "ade20k", "cityscapes"])
def test_mmseg_prediction_mapping_agrees_with_the_mmseg_annotation(mini_tree, name):
    """Mapping the pnp ground truth (dataset ids) through the protocol's prediction table must give the
    mmseg annotation wherever that annotation is not ignored: the two id spaces are consistent."""
    root, ids = mini_tree
    d = ds(root, name, protocol="mmseg")
    prot = get_protocol(name, "mmseg", d.vocabulary)
    for i in ids[name]:
        mm = d.ground_truth(i, "mmseg")
        if name == "coco_object":
            # the mmseg file comes from stuff maps, the pnp one from instances: compare via stuff ids
            dataset_ids = ds(root, "coco_stuff").ground_truth(i, "pnp")
            dataset_ids = np.where(np.isin(dataset_ids, list(d.vocabulary.ids)), dataset_ids, 0)
        else:
            dataset_ids = d.ground_truth(i, "pnp")
        mapped = prot.pred_to_eval(dataset_ids)
        keep = mm != 255
        if name in ("voc", "psc"):
            keep &= dataset_ids > 0 if prot.variant in ("voc20", "pc59") else keep
        assert (mapped[keep] == mm[keep]).all()


def test_coco_object_rasterised_first_annotation_wins_with_crowd(mini_tree):
    root, ids = mini_tree
    co = ds(root, "coco_object")
    i = ids["coco_object"][-1]  # first image written: 60x80
    gt = co.ground_truth(i, "pnp")
    h, w = gt.shape
    assert gt[5, 5] == 1  # person polygon
    assert gt[15, 25] == 1  # overlap of person and dog: the first annotation (person) wins
    assert gt[25, 35] == 18  # dog only
    assert gt[h - 1, w - 1] == 17  # crowd RLE (cat) is included
    assert gt[h - 11, 5] == 0


def test_rasterise_order_matters():
    a = {"category_id": 5, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
    b = {"category_id": 7, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
    assert rasterise_instances([a, b], 12, 12)[5, 5] == 5
    assert rasterise_instances([b, a], 12, 12)[5, 5] == 7


def test_coco_order_is_the_instances_file_order(mini_tree):
    root, ids = mini_tree
    assert ds(root, "coco_stuff").image_ids() == ids["coco_stuff"]
    assert ids["coco_stuff"] != sorted(ids["coco_stuff"])


def test_faithful_order_is_torch_randperm_seed_0():
    assert faithful_order([str(i) for i in range(10)]) == ["4", "1", "7", "5", "3", "9", "0", "8", "6", "2"]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1])
def test_the_torch_free_randperm_is_torchs(seed):
    import torch

    from pnp_ovss.ordering import torch_randperm

    for n in (0, 1, 2, 3, 17, 500, 1449, 5000):
        g = torch.Generator()
        g.manual_seed(seed)
        assert torch_randperm(n, seed) == torch.randperm(n, generator=g).tolist(), (n, seed)
    assert make_shards(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


# --- clear errors -------------------------------------------------------------------------------


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match=r"VOCdevkit/VOC2012.*not found.*mmseg layout"):
        ds(tmp_path, "voc")


def test_wrong_layout_names_the_missing_folder(mini_tree, tmp_path):
    root, _ = mini_tree
    shutil.copytree(root / "ADEChallengeData2016" / "images", tmp_path / "ADEChallengeData2016" / "images")
    with pytest.raises(DatasetError, match="annotations/validation"):
        ds(tmp_path, "ade20k")


def test_image_without_annotation_and_wrong_size(mini_tree, tmp_path):
    root, ids = mini_tree
    shutil.copytree(root / "VOCdevkit", tmp_path / "VOCdevkit")
    voc = ds(tmp_path, "voc")
    first, second = ids["voc"][0], ids["voc"][1]
    voc.annotation_path(first).unlink()
    with pytest.raises(DatasetError, match=rf"SegmentationClass/{first}.png: annotation not found"):
        voc.ground_truth(first, "pnp")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(voc.annotation_path(second))
    with pytest.raises(DatasetError, match=rf"{second}.png: annotation is 7x5 .* expected the same size"):
        voc.ground_truth(second, "pnp")


def test_truncated_image_is_named(tmp_path):
    from pnp_ovss.io import read_image

    p = tmp_path / "broken.jpg"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DatasetError, match="broken.jpg: unreadable or truncated"):
        read_image(p)


def test_folder_dataset_checks_label_values(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "ann" / "a.png")
    d = ds(tmp_path, "folder", images=str(tmp_path / "img"), annotations=str(tmp_path / "ann"), classes="cat,sofa")
    assert d.image_ids() == ["a"]
    with pytest.raises(DatasetError, match=r"a.png: label values \[9\]"):
        d.ground_truth("a", "pnp")
    with pytest.raises(Exception, match="classes"):
        ds(tmp_path, "folder", images=str(tmp_path / "img"))


def test_vocabularies_match_the_released_lists():
    from pnp_ovss.vocab import caption_for, load_vocabulary

    assert len(load_vocabulary("voc")) == 20 and load_vocabulary("voc").name(11) == "table"
    assert len(load_vocabulary("psc")) == 59
    ade = load_vocabulary("ade20k")
    assert len(ade) == 150 and ade.name(59) == ade.name(131) == "screen" and ade.caption_name(45) == "chestofdrawers"
    cs = load_vocabulary("coco_stuff")
    assert len(cs) == 172 and cs.caption_name(10) == "trafficlight" and cs.caption_name(96) == "buildingother"
    assert caption_for(["person", "train", "wall-brick"]) == "A picture of person train wallbrick"
