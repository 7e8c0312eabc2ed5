"""One image reader for every stage (issue 18): EXIF orientation, high bit depths scaled (never clipped),
every format PIL opens used or named, and the pixel limit refused at parse time or downscaled."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pnp_ovss.datasets import get_dataset, reading_of
from pnp_ovss.datasets.base import scan_images
from pnp_ovss.datasets.folder import demo_root
from pnp_ovss.errors import DatasetError
from pnp_ovss.io import STORED, ImageReading, capped_size, read_header, read_image, reading_tag

from support import SNAKEMAKE  # noqa: E402


def rgb_picture(h=40, w=60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def write_png16_rgb(path: Path, rgb8: np.ndarray) -> None:
    """A 48-bit RGB PNG (PIL cannot write one): each 8-bit value v stored as v * 257."""
    h, w = rgb8.shape[:2]
    rows = (rgb8.astype(np.uint16) * 257).astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def save_with_orientation(path: Path, rgb: np.ndarray, orientation: int) -> None:
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())


def test_exif_orientation_turns_the_pixels_only_when_the_reading_says_so(tmp_path):
    rgb = rgb_picture(40, 60)
    path = tmp_path / "phone.png"
    save_with_orientation(path, rgb, 6)  # stored 60x40, displayed rotated 90 degrees clockwise: 40x60
    header = read_header(path)
    assert (header.width, header.height, header.orientation) == (60, 40, 6)
    turned = read_image(path, ImageReading(exif_orientation=True))
    assert turned.shape == (60, 40, 3)
    assert np.array_equal(turned, np.rot90(rgb, k=-1))
    assert np.array_equal(read_image(path, STORED), rgb)
    assert header.displayed(ImageReading(exif_orientation=True)) == (60, 40)
    assert reading_tag(header, ImageReading(exif_orientation=True)) == "exif-orientation=6"
    assert reading_tag(header, STORED) is None


def test_the_users_photos_are_read_as_displayed_and_the_benchmarks_as_stored(mini_tree):
    root, _ = mini_tree
    folder = get_dataset({"dataset": "demo"})
    assert folder.reading.exif_orientation is True
    voc = get_dataset({"dataset": "voc", "data_root": str(root)})
    assert voc.reading.exif_orientation is False
    # one named switch overrides either way
    assert reading_of({"reading": {"exif_orientation": False}}, folder).exif_orientation is False
    assert reading_of({"reading": {"exif_orientation": True}}, voc).exif_orientation is True


def test_sixteen_bit_images_are_scaled_by_their_range_not_clipped(tmp_path):
    rgb = rgb_picture()
    grey = rgb[..., 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # mode I;16
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.tif")
    write_png16_rgb(tmp_path / "rgb16.png", rgb)
    Image.fromarray(grey.astype(np.float32) / 255.0).save(tmp_path / "float.tif")  # mode F in 0..1
    Image.fromarray(grey.astype(np.int32) * 257).save(tmp_path / "int32.tif")  # mode I, 16-bit values
    expected_grey = np.repeat(grey[..., None], 3, axis=2)
    assert read_header(tmp_path / "grey16.png").mode == "I;16"
    for name in ("grey16.png", "grey16.tif", "float.tif", "int32.tif"):
        assert np.array_equal(read_image(tmp_path / name), expected_grey), name
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), rgb)
    # what PIL's own convert("RGB") does to the 16-bit grey file: every non-zero pixel white
    with Image.open(tmp_path / "grey16.png") as im:
        assert (np.asarray(im.convert("RGB"))[grey > 0] == 255).all()
    assert reading_tag(read_header(tmp_path / "grey16.png"), STORED) == "scaled-from=I;16"


def test_multi_frame_files_give_their_first_frame(tmp_path):
    frames = [Image.fromarray(rgb_picture()), Image.fromarray(255 - rgb_picture())]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    header = read_header(tmp_path / "anim.gif")
    assert header.frames == 2
    first = read_image(tmp_path / "anim.gif")
    with Image.open(tmp_path / "anim.gif") as im:
        assert np.array_equal(first, np.asarray(im.convert("RGB")))


def test_capped_size_keeps_the_aspect_and_the_limit():
    for h, w, limit in [(9000, 12000, 40_000_000), (1000, 1000, 999_999), (3, 7000, 10_000)]:
        nh, nw = capped_size(h, w, limit)
        assert nh * nw <= limit and abs(nw / nh - w / h) / (w / h) < 0.02 + 1 / min(nh, nw)


def test_a_folder_names_what_it_does_not_use_and_refuses_what_it_cannot_read(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(rgb_picture()).save(images / "a.png")
    Image.fromarray(rgb_picture()).save(images / "b.gif")
    (images / "notes.txt").write_text("not an image")
    (images / ".DS_Store").write_bytes(b"\0")
    cfg = {"dataset": "folder", "images": str(images), "classes": "cat,dog"}
    ds = get_dataset(cfg)
    assert ds.image_ids() == ["a", "b"]  # the .gif is used
    notes = " ".join(scan_images(ds, ds.image_ids()).notes)
    assert "notes.txt (not an image format PIL reads)" in notes and ".DS_Store (hidden)" in notes
    (images / "c.jpg").write_bytes(b"garbage, not a JPEG")
    ds = get_dataset(cfg)
    with pytest.raises(DatasetError, match=r"c\.jpg: not an image this tool can read"):
        scan_images(ds, ds.image_ids())


def test_an_image_above_max_pixels_is_refused_from_its_header_naming_the_file_size_and_key(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (3000, 2000)).save(images / "huge.png")
    Image.fromarray(rgb_picture()).save(images / "small.png")
    cfg = {"dataset": "folder", "images": str(images), "classes": "cat", "reading": {"max_pixels": 1_000_000}}
    ds = get_dataset(cfg)
    with pytest.raises(DatasetError) as err:
        scan_images(ds, ds.image_ids())
    msg = str(err.value)
    assert "huge.png" in msg and "3000x2000" in msg and "reading.max_pixels" in msg and "downscale" in msg
    assert "small.png" not in msg
    cfg["reading"]["oversize"] = "downscale"
    ds = get_dataset(cfg)
    scan = scan_images(ds, ds.image_ids())
    assert scan.tags == {"huge": f"capped={1224}x{816}", "small": None}
    assert ds.image_size("huge") == (2000, 3000) and ds.working_size("huge") == (816, 1224)
    assert read_image(images / "huge.png", ds.reading).shape == (816, 1224, 3)


def test_a_refine_job_asks_for_the_memory_of_its_largest_image(tmp_path):
    from pnp_ovss.plan import make_plan

    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (5000, 5000)).save(images / "big.png")  # 25 MP, a small file
    Image.fromarray(rgb_picture()).save(images / "small.png")
    plan = make_plan({"dataset": "folder", "images": str(images), "classes": "cat", "results": str(tmp_path / "r"),
                      "shard_size": 1, "mode": "clean"})
    rh = plan.runs[0].refine
    mem = {job.ids[0]: plan.refine_mem_mb(rh, job.name) for job in plan.stage_jobs[rh]}
    assert mem["small"] == 4000
    assert mem["big"] == int((0.75 * 2**30 + 318 * 25_000_000) * 1.2 / 1e6) + 1  # about 10.5 GB


def test_dry_run_refuses_an_oversized_image_before_any_job(tmp_path, repo_copy):
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (2100, 1000)).save(images / "wide.png")
    proc = subprocess.run(
        SNAKEMAKE + ["-n", "--cores", "1", "--config", "dataset=folder", f"images={images}", "classes=cat",
                     "reading={max_pixels: 2000000}"],
        cwd=repo_copy, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "wide.png: image is 2100x1000 (2.1 MP), above reading.max_pixels 2000000" in out


@pytest.mark.workflow
@pytest.mark.slow
def test_folder_run_reads_photos_as_people_see_them(tmp_path, repo_copy, tiny_model):
    """One real run: a phone photo with Orientation=6, a 16-bit copy of a photo, a GIF and an image above
    max_pixels (downscaled): masks at the displayed sizes, the 16-bit copy's mask equal to the original's."""
    images = tmp_path / "photos"
    images.mkdir()
    beach = np.asarray(Image.open(demo_root() / "images" / "beach.png").convert("RGB"))
    Image.fromarray(beach).save(images / "beach.png")
    write_png16_rgb(images / "beach16.png", beach)
    h, w = beach.shape[:2]
    save_with_orientation(images / "phone.png", beach, 6)
    Image.fromarray(beach).save(images / "anim.gif", save_all=True, append_images=[Image.fromarray(255 - beach)])
    Image.fromarray(beach).resize((w * 3, h * 3)).save(images / "big.png")
    (images / "README.txt").write_text("not an image")
    proc = subprocess.run(
        SNAKEMAKE + ["--cores", "2", "--config", "dataset=folder", f"images={images}", "classes=sky,sea,sand",
                     f"gradcam={{model: {tiny_model}, device: cpu}}", f"reading={{max_pixels: {h * w * 4}, "
                     f"oversize: downscale}}"],
        cwd=repo_copy, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "README.txt (not an image format PIL reads)" in out
    assert "anim.gif (2 frames)" in out
    latest = repo_copy / "results" / "folder" / "latest"

    def mask(name):
        return np.asarray(Image.open(latest / f"{name}.png"))

    assert np.array_equal(mask("beach16"), mask("beach"))
    assert mask("phone").shape == (w, h)  # displayed: rotated
    assert mask("big").shape == (h * 3, w * 3)  # computed at the cap, resized back
    assert mask("anim").shape == (h, w)
