"""`pnp-ovss app` (pnp_ovss.app): the page's request runs the same stage functions as `pnp-ovss segment` (equal
masks), its pictures mark the dropped patches, and the page itself — started here with the tiny model — answers
through its HTTP API (gradio_client) and in a real headless Chromium (the screenshot the README shows)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from pnp_ovss.app import DEMO_DIR, Settings, heat_map_picture, segment_images
from pnp_ovss.errors import ConfigError, DatasetError

DEMO_IMAGE = DEMO_DIR / "images" / "beach.png"
CLASSES = "sky, water, sand"


def test_the_page_segments_like_pnp_ovss_segment(tiny_model, tmp_path):
    """The app's request and `pnp-ovss segment` with the same settings give the same label maps, byte for byte."""
    from pnp_ovss.segment import segment

    settings = Settings(classes=CLASSES, threshold=0.2, drop_iter=2)
    outcome = segment_images([DEMO_IMAGE], settings, model=str(tiny_model), backend="auto", device="cpu",
                             out_dir=tmp_path / "app")
    args = argparse.Namespace(mode="clean", gpt4o=False, device="cpu", backend="auto", model=str(tiny_model),
                              set=["gradcam.drop_iter=2", "refine.postprocess=blur+crf", "refine.threshold=0.2"])
    segment([DEMO_IMAGE], "sky,water,sand", tmp_path / "cli", args)
    (result,) = outcome.results
    assert result.label_png.read_bytes() == (tmp_path / "cli" / "beach.png").read_bytes()
    labels = np.asarray(Image.open(result.label_png))
    with Image.open(DEMO_IMAGE) as im:
        assert labels.shape == (im.height, im.width)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    assert result.masks[0][1].startswith("beach · sky (")
    # every class at every drop iteration: 3 classes x 2 iterations, iteration 0 with nothing dropped
    captions = [c for _, c in result.heatmaps]
    assert len(captions) == 6 and captions[0] == "beach · sky · drop iteration 0 (nothing dropped yet)"
    assert captions[1] == "beach · sky · drop iteration 1 (10 patches dropped)"
    assert result.overlay.height > labels.shape[0]  # the legend strip under the photo


def test_gpt4o_chooses_the_classes_and_the_model_is_loaded_once(tiny_model, tmp_path, monkeypatch):
    """With OPENAI_API_KEY (a local OpenAI-compatible server here) GPT-4o picks each image's classes among those
    typed; a second request loads no model again (one per process)."""
    from pnp_ovss.stages.gradcam import cached_model
    from support.openai_server import SECRET_KEY, FakeOpenAIServer

    server = FakeOpenAIServer().start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        settings = Settings(classes=CLASSES, gpt4o=True, drop_iter=1)
        first = segment_images([DEMO_IMAGE], settings, model=str(tiny_model), backend="auto", device="cpu",
                               out_dir=tmp_path / "a")
        loads = cached_model.cache_info().misses
        second = segment_images([DEMO_IMAGE], Settings(classes=CLASSES, drop_iter=1), model=str(tiny_model),
                                backend="auto", device="cpu", out_dir=tmp_path / "b")
    finally:
        server.stop()
    assert len(server.image_payloads()) == 1  # one question, for the one image
    # the fake answers "[1: ...], [100%]": only the first typed class, sky, is looked for
    assert [c for _, c in first.results[0].heatmaps] == ["beach · sky · drop iteration 0 (nothing dropped yet)"]
    assert len(second.results[0].heatmaps) == 3 and cached_model.cache_info().misses == loads


def test_the_page_binds_to_this_machine_unless_told():
    from pnp_ovss.cli import build_parser

    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.backend) == ("127.0.0.1", 7860, "auto")
    assert build_parser().parse_args(["app", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_dropped_patches_are_shaded_and_picked_ones_outlined():
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 0] = 1.0
    picture = np.asarray(heat_map_picture(image, grid, removed=[15], picked=[5]))
    assert picture.shape == (64, 64, 3)
    inside_removed, elsewhere = picture[56, 56], picture[40, 8]
    assert inside_removed.sum() < elsewhere.sum()  # the patch dropped before this iteration is shaded
    assert (picture[16, 20] == 255).all()  # the outline of the patch picked at this iteration (row 1, col 1)
    assert picture[2, 2, 0] > picture[40, 8, 0]  # hot where the map is high


@pytest.mark.parametrize("settings,paths,message", [
    (Settings(classes=" , "), [DEMO_IMAGE], "no classes: type the class names"),
    (Settings(classes="cat"), [], "no image: upload one or more photos"),
])
def test_bad_requests_are_said_in_words(tiny_model, tmp_path, settings, paths, message):
    with pytest.raises(ConfigError, match=message):
        segment_images(paths, settings, model=str(tiny_model), backend="auto", device="cpu", out_dir=tmp_path)


def test_an_unreadable_upload_is_named(tiny_model, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"not a picture at all")
    with pytest.raises(DatasetError, match="holiday.png"):
        segment_images([bad], Settings(classes="cat"), model=str(tiny_model), backend="auto", device="cpu",
                       out_dir=tmp_path / "out")


# --- the page, started ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tiny_model, tmp_path_factory):
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
    from pnp_ovss.app import build_app

    page = build_app(model=str(tiny_model), device="cpu", out_root=tmp_path_factory.mktemp("app-out"))
    port = free_port()
    page.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def segment_call(client, path, classes):
    from gradio_client import handle_file

    return client.predict([handle_file(str(path))], classes, "", False, "clean", None, None, None, "blur+crf", 2,
                          api_name="/segment")


def test_the_api_returns_a_mask_of_the_image_size_with_only_the_asked_classes(page_url):
    from gradio_client import Client

    client = Client(page_url, verbose=False)
    status, overlays, masks, heatmaps, downloads = segment_call(client, DEMO_IMAGE, CLASSES)
    assert status.startswith("Segmented 1 image(s) into 3 class(es), mode clean"), status
    (png,) = downloads
    labels = np.asarray(Image.open(png))
    with Image.open(DEMO_IMAGE) as im:
        assert labels.shape == (im.height, im.width)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    assert len(overlays) == 1 and len(masks) == 3 and len(heatmaps) == 3 * 2


def test_an_unreadable_upload_gets_a_message_not_a_traceback(page_url, tmp_path):
    from gradio_client import Client

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but nothing after")
    status, overlays, _, _, downloads = segment_call(Client(page_url, verbose=False), bad, "cat")
    assert status.startswith("**Could not segment:**") and "broken.png" in status, status
    assert "Traceback" not in status and overlays == [] and downloads == []


def test_words_the_tokenizer_does_not_know_are_named_on_the_page(page_url):
    from gradio_client import Client

    status, overlays, *_ = segment_call(Client(page_url, verbose=False), DEMO_IMAGE, "sky, 猫")
    assert status.startswith("Segmented 1 image(s) into 2 class(es)") and len(overlays) == 1, status
    assert "class '猫': every word piece is unknown to the tokenizer" in status


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_real_browser_uploads_runs_and_sees_the_overlay(page_url, tmp_path):
    """Headless Chromium (Debian's `chromium`, driven by Playwright): load the page, upload the demo photo, type the
    classes, press Segment, wait for the overlay, take a screenshot (PNP_OVSS_SCREENSHOT=docs/app.png also saves it
    there: the picture the README shows)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the app extra's tests)")
    if chromium() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_url, wait_until="networkidle")
            page.locator("input[type=file]").first.set_input_files(str(DEMO_IMAGE))
            page.get_by_label("classes (comma-separated)").fill(CLASSES)
            page.locator("#segment-button").click()
            page.wait_for_selector("#overlay img", timeout=120_000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('Segmented')", timeout=120_000)
            assert "Segmented 1 image(s)" in page.locator("#status").inner_text()
            target = tmp_path / "app.png"
            page.screenshot(path=str(target), full_page=True)
            with Image.open(target) as shot:
                assert shot.width == 1400 and shot.height >= 1000
            if os.environ.get("PNP_OVSS_SCREENSHOT"):
                shutil.copy(target, os.environ["PNP_OVSS_SCREENSHOT"])
        finally:
            browser.close()
