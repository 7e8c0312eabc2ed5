"""Report pictures: overlays with legends, prediction/ground-truth panels, IoU bar chart, report folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from support.fakes import FakeDataset, quadrant_image, write_rgb
from pnp_ovss import report as rp
from pnp_ovss.io import default_palette, write_label_png

PALETTE = default_palette()
NAMES = {1: "cat", 2: "sofa", 3: "lamp", 4: "potted plant"}


def labels_with(h=40, w=60):
    lab = np.zeros((h, w), np.uint8)
    lab[:, :20] = 1
    lab[:10, 40:] = 3
    lab[30:, 40:] = 255
    return lab


def test_legend_lists_present_classes_by_area_and_skips_background():
    entries = rp.legend_entries(labels_with(), NAMES)
    assert entries == [(1, "cat"), (3, "lamp"), (255, "ignore")]
    assert rp.legend_entries(np.zeros((3, 3), int), NAMES) == []
    assert rp.legend_entries(np.array([[7]]), NAMES) == [(7, "id 7")]


def test_blend_tints_only_labelled_pixels():
    image = np.full((40, 60, 3), 100, np.uint8)
    out = rp.blend_mask(image, labels_with(), PALETTE)
    assert np.array_equal(out[20, 30], [100, 100, 100])  # background: the photo as it is
    expected = np.rint(0.45 * 100 + 0.55 * PALETTE[1].astype(float)).astype(np.uint8)
    assert np.array_equal(out[20, 5], expected)  # cat, away from boundaries
    assert np.array_equal(out[20, 19], rp.BOUNDARY_COLOUR)  # last cat column borders background


def test_overlay_has_the_photo_size_plus_its_legend_and_shows_the_photo_on_top():
    image = quadrant_image(40, 60)
    lab = labels_with()
    pic = rp.overlay(image, lab, PALETTE, NAMES)
    assert pic.mode == "RGB"
    assert pic.size == (60, 40 + legend_height(lab, NAMES, 60))
    top = np.asarray(pic)[:40]
    assert np.array_equal(top, rp.blend_mask(image, lab, PALETTE))
    legend = np.asarray(pic)[40:]
    assert (legend == PALETTE[1]).all(axis=-1).any()  # the cat swatch is drawn
    assert (legend == PALETTE[3]).all(axis=-1).any()
    assert not (legend == PALETTE[2]).all(axis=-1).any()  # sofa absent


def legend_height(labels, names, width):
    return rp.draw_legend(rp.legend_entries(labels, names), PALETTE, width).height


def test_legend_wraps_into_more_rows_for_many_classes_on_a_narrow_picture():
    many = np.repeat(np.arange(1, 5), 10).reshape(4, 10).astype(np.uint8)
    assert legend_height(many, NAMES, 40) > legend_height(many, NAMES, 2000)


def test_panel_puts_ground_truth_beside_the_prediction(tmp_path):
    image = quadrant_image(40, 60)
    pred, gt = labels_with(), np.roll(labels_with(), 5, axis=1)
    path = tmp_path / "panel.png"
    panel = rp.overlay_panel(image, pred, gt, PALETTE, NAMES, title="img1", path=path)
    with Image.open(path) as saved:
        assert saved.size == panel.size and saved.format == "PNG"
    assert panel.width == 2 * 60 + rp.PANEL_GAP
    alone = rp.overlay_panel(image, pred, None, PALETTE, NAMES)
    assert alone.width == 60
    assert panel.height >= alone.height > 40
    with pytest.raises(ValueError, match="differ"):
        rp.overlay_panel(image, pred, gt[:, :50], PALETTE, NAMES)


def per_class_table():
    return pd.DataFrame(
        {
            "class_id": [0, 1, 2, 3],
            "class_name": ["background", "cat", "sofa", "lamp"],
            "iou": [80.0, 50.0, float("nan"), 20.0],
            "scored": [True, True, False, True],
        }
    )


def test_iou_bar_chart_is_a_png_with_one_bar_per_scored_class(tmp_path, monkeypatch):
    seen = {}
    import matplotlib.axes

    real_barh = matplotlib.axes.Axes.barh
    real_axvline = matplotlib.axes.Axes.axvline

    def barh(self, y, values, **kw):
        seen["values"] = list(values)
        return real_barh(self, y, values, **kw)

    def axvline(self, x, **kw):
        seen["miou"] = x
        return real_axvline(self, x, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", barh)
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", axvline)
    csv_path = tmp_path / "per_class_iou.csv"
    per_class_table().to_csv(csv_path, index=False)
    out = rp.iou_bar_chart(csv_path, tmp_path / "iou.png")
    assert seen["values"] == [80.0, 50.0, 20.0]
    assert seen["miou"] == pytest.approx(50.0)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 800 and im.size[1] >= 120


def test_iou_bar_chart_reads_fractions_too(tmp_path, monkeypatch):
    seen = {}
    import matplotlib.axes

    real = matplotlib.axes.Axes.axvline

    def axvline(self, x, **kw):
        seen["m"] = x
        return real(self, x, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", axvline)
    table = per_class_table().assign(iou=lambda t: t["iou"] / 100)
    rp.iou_bar_chart(table, tmp_path / "iou.png")
    assert seen["m"] == pytest.approx(50.0)


def test_sample_ids_are_spread_and_only_those_with_masks():
    ids = [f"i{k}" for k in range(10)]
    assert rp.sample_ids(ids, ids, 3) == ["i0", "i4", "i9"]  # positions 0, 4.5 → 4 (round half to even), 9
    assert rp.sample_ids(ids, ["i3", "i7"], 5) == ["i3", "i7"]
    assert rp.sample_ids(ids, ids, 0) == []


@pytest.mark.parametrize("with_gt", [True, False])
def test_make_report_figures_writes_panels_and_the_chart(tmp_path, with_gt):
    h, w = 40, 60
    dataset = FakeDataset(tmp_path, with_gt=with_gt)
    shards = [tmp_path / "masks" / "shard-0000", tmp_path / "masks" / "shard-0001"]
    for k, image_id in enumerate(["a", "b", "c"]):
        write_rgb(dataset.image_path(image_id), quadrant_image(h, w))
        write_label_png(shards[k % 2] / f"{image_id}.png", labels_with(h, w) % 255, PALETTE)
        write_label_png(dataset.annotation_path(image_id), labels_with(h, w), PALETTE)
    csv_path = tmp_path / "per_class_iou.csv"
    per_class_table().to_csv(csv_path, index=False)
    out = rp.make_report_figures(dataset, shards, ["a", "b", "c", "missing"], csv_path, tmp_path / "report", samples=2)
    assert [p.name for p in out["overlays"]] == ["a.png", "c.png"]
    expected_width = 2 * w + rp.PANEL_GAP if with_gt else w
    for p in out["overlays"]:
        assert p.parent == tmp_path / "report" / "overlays"
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width == expected_width and im.height > h
    assert out["iou_chart"] == tmp_path / "report" / "per_class_iou.png" and out["iou_chart"].is_file()


def test_report_without_per_class_table_has_no_chart(tmp_path):
    dataset = FakeDataset(tmp_path, with_gt=False)
    out = rp.make_report_figures(dataset, tmp_path / "none", [], None, tmp_path / "report")
    assert out == {"overlays": [], "iou_chart": None}


def test_parameters_table(tmp_path):
    path = rp.write_parameters_table({"refine.threshold": 0.15, "refine.postprocess": "blur+crf"}, tmp_path / "p.csv")
    assert path.read_text() == "parameter,value\nrefine.threshold,0.15\nrefine.postprocess,blur+crf\n"
