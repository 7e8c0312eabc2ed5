"""``pnp-ovss app``: a page to try PnP-OVSS on: photos and words in, masks out, with the Salience Drop steps shown.

The page (Gradio, the optional extra ``pip install -e ".[app]"``) runs the same stage functions as the workflow
and ``pnp-ovss segment`` (:func:`pnp_ovss.segment.prepare_segment` and :func:`pnp_ovss.segment.run_segment`:
labels -> gradcam -> refine into a temporary results folder), then shows, per image: the overlay with a legend,
each class's mask, the GradCAM map of each class at each drop iteration with the patches dropped before it
marked, and the label PNG to download. The model is loaded once per process (the GradCAM stage's model cache,
warmed when the app starts). Bad input (an unreadable file, no classes, a caption too long for the model) is
answered in words on the page, never with a traceback. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .descriptors import BENCHMARKS, DESCRIPTORS
from .errors import ConfigError, PnpOvssError
from .io import read_label_png

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
#: the benchmark vocabularies the page offers (besides the classes typed in)
VOCABULARIES = {DESCRIPTORS[name].title: name for name in BENCHMARKS}
POSTPROCESS = ("blur+crf", "crf", "blur", "none")
#: colours of the patches marked on a heat map: removed before this iteration, picked at this iteration
REMOVED_RGB, PICKED_RGB = (30, 30, 30), (255, 255, 255)


@dataclass
class Settings:
    """What the page asks: the classes (typed, or a benchmark's vocabulary), where the labels come from, and the
    method's settings (``None`` = the backend's default)."""

    classes: str = ""
    vocabulary: str | None = None
    gpt4o: bool = False
    mode: str = "clean"
    layer: int | None = None
    head: int | None = None
    threshold: float | None = None
    postprocess: str = "blur+crf"
    drop_iter: int = 4

    def class_spec(self) -> str:
        """The classes as ``pnp-ovss segment --classes`` takes them; an empty choice is refused in words."""
        if self.vocabulary:
            from .vocab import load_vocabulary

            return ",".join(load_vocabulary(self.vocabulary).names)
        names = [n.strip() for n in (self.classes or "").replace("\n", ",").split(",") if n.strip()]
        if not names:
            raise ConfigError("no classes: type the class names to find (e.g. cat, sofa, lamp) or pick a benchmark's "
                              "vocabulary")
        return ",".join(names)


@dataclass
class ImageResult:
    image_id: str
    overlay: Image.Image
    masks: list[tuple[Image.Image, str]] = field(default_factory=list)
    heatmaps: list[tuple[Image.Image, str]] = field(default_factory=list)
    label_png: Path | None = None


@dataclass
class Outcome:
    results: list[ImageResult]
    notes: list[str]


def app_config(settings: Settings, model: str | None, backend: str, device: str) -> dict:
    """The configuration of one request: ``pnp-ovss segment``'s, with the page's settings."""
    from .segment import segment_config

    sets = [f"gradcam.drop_iter={int(settings.drop_iter)}", f"refine.postprocess={settings.postprocess}"]
    if settings.layer is not None:
        sets.append(f"gradcam.layer={int(settings.layer)}")
    if settings.head is not None:
        sets.append(f"gradcam.head={int(settings.head)}")
    if settings.threshold is not None:
        sets.append(f"refine.threshold={float(settings.threshold)}")
    args = argparse.Namespace(mode=settings.mode, gpt4o=settings.gpt4o, device=device, backend=backend,
                              model=model, set=sets)
    return segment_config(settings.class_spec(), args)


# --- pictures -------------------------------------------------------------------------------------------


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[H, W] in 0..1 -> [H, W, 3] uint8, dark blue (cold) through red to yellow (hot)."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(2.0 * v, 0, 1)
    g = np.clip(2.0 * v - 1.0, 0, 1)
    b = np.clip(1.0 - 2.0 * v, 0, 1) * 0.8 + 0.2 * (1 - v)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def heat_map_picture(image_rgb: np.ndarray, patch_map: np.ndarray, removed: list[int], picked: list[int]) -> Image.Image:
    """One GradCAM map (a P × P patch grid) min-max scaled, upsampled onto the photo and blended with it; the
    patches removed before this iteration shaded with a dark outline, those picked at it outlined in white."""
    h, w = image_rgb.shape[:2]
    p = patch_map.shape[0]
    m = np.nan_to_num(patch_map.astype(np.float64))
    span = m.max() - m.min()
    scaled = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    heat = Image.fromarray((scaled * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    colours = heat_colours(np.asarray(heat, dtype=np.float64) / 255.0)
    picture = Image.fromarray((0.45 * image_rgb + 0.55 * colours).astype(np.uint8))
    draw = ImageDraw.Draw(picture, "RGBA")
    for patches, rgb, fill in ((removed, REMOVED_RGB, (0, 0, 0, 110)), (picked, PICKED_RGB, None)):
        for index in patches:
            row, col = divmod(int(index), p)
            box = (col * w / p, row * h / p, (col + 1) * w / p - 1, (row + 1) * h / p - 1)
            draw.rectangle(box, outline=rgb + (255,), fill=fill, width=max(1, round(min(w, h) / 200)))
    return picture


def mask_picture(image_rgb: np.ndarray, labels: np.ndarray, class_id: int, colour) -> Image.Image:
    """The pixels of one class in its palette colour over a dimmed photo."""
    inside = labels == class_id
    out = (0.35 * image_rgb).astype(np.uint8)
    out[inside] = (0.4 * image_rgb[inside] + 0.6 * np.asarray(colour)).astype(np.uint8)
    return Image.fromarray(out)


def image_pictures(dataset, image_id: str, labels: np.ndarray, maps, names: dict[int, str]) -> ImageResult:
    """Everything the page shows of one image."""
    from .report import overlay

    image = dataset.read_crf_image(image_id)
    result = ImageResult(image_id, overlay(image, labels, dataset.palette, names))
    palette = dataset.palette
    for class_id in maps.class_ids if maps is not None else sorted(set(np.unique(labels).tolist()) - {0}):
        share = float((labels == class_id).mean())
        result.masks.append((mask_picture(image, labels, class_id, palette[class_id]),
                             f"{image_id} · {names.get(class_id, class_id)} ({100 * share:.1f} % of the image)"))
    if maps is not None:
        iterations = maps.maps.shape[1]
        for k, class_id in enumerate(maps.class_ids):
            for d in range(iterations):
                removed = [int(i) for i in maps.dropped[:d].ravel()]
                picked = [int(i) for i in maps.dropped[d].ravel()] if d < maps.dropped.shape[0] else []
                caption = (f"{image_id} · {names.get(class_id, class_id)} · drop iteration {d}"
                           + (f" ({len(removed)} patches dropped)" if removed else " (nothing dropped yet)"))
                result.heatmaps.append((heat_map_picture(image, maps.maps[k, d], removed, picked), caption))
    return result


# --- one request ----------------------------------------------------------------------------------------


def segment_images(paths: list[str | Path], settings: Settings, *, model: str | None, backend: str, device: str,
                   out_dir: Path, progress=None) -> Outcome:
    """Segment ``paths`` with the page's settings through the workflow's stage functions; the label PNGs are
    written to ``out_dir``. ``progress(fraction, text)`` is told each stage."""
    from .entries import entry_path
    from .segment import prepare_segment, run_segment
    from .stages.views import write_masks
    from .store import read_image_maps

    if not paths:
        raise ConfigError("no image: upload one or more photos, or pick a demo image")
    say = progress or (lambda fraction, text: None)
    say(0.02, "checking the images and the classes")
    cfg = app_config(settings, model, backend, device)
    prepared = prepare_segment(cfg, [Path(p) for p in paths], settings.class_spec(), gpt4o=settings.gpt4o)
    dataset = prepared.dataset
    names = dict(zip(dataset.vocabulary.ids, dataset.vocabulary.names))
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="pnp-ovss-app-") as tmp:
        steps = {"labels": (0.1, "labels: which classes each image shows"),
                 "gradcam": (0.25, "GradCAM with Salience Drop (the model)"),
                 "refine": (0.7, "refine: threshold, blur, DenseCRF")}
        plan, keys = run_segment(cfg, prepared, Path(tmp), out_dir / ".labels-cache",
                                 on_stage=lambda stage: say(*steps[stage]))
        say(0.9, "pictures")
        run = plan.runs[0]
        skipped = write_masks(dataset.image_ids(), keys, plan.stage_dir("refine", run.refine), out_dir)
        gradcam_dir = Path(plan.stage_dir("gradcam", run.gradcam))
        gradcam_keys = plan.stage_keys(run.gradcam)
        results = []
        for image_id in dataset.image_ids():
            png = out_dir / f"{image_id}.png"
            if not png.is_file():
                continue
            store = entry_path(gradcam_dir, "gradcam", gradcam_keys[image_id])
            try:
                maps = read_image_maps(store, image_id)
            except (KeyError, FileNotFoundError, OSError):
                maps = None  # an image with no class to look for: no maps
            result = image_pictures(dataset, image_id, read_label_png(png), maps, names)
            result.label_png = png
            results.append(result)
    notes = list(prepared.notes) + [f"{row['image_id']}: not segmented ({row['reason']})" for row in skipped]
    say(1.0, "done")
    return Outcome(results, notes)


def error_text(exc: BaseException) -> str:
    """What the page says when a request fails: the message of our own errors, the kind and message of others."""
    if isinstance(exc, PnpOvssError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- the page -------------------------------------------------------------------------------------------


def demo_examples() -> list[list]:
    classes = ", ".join(line.strip() for line in (DEMO_DIR / "classes.txt").read_text().splitlines() if line.strip())
    return [[[str(p)], classes] for p in sorted((DEMO_DIR / "images").glob("*.png"))[:3]]


def build_app(*, model: str | None, backend: str = "auto", device: str = "auto", out_root: Path | None = None):
    """The Gradio page (``gr.Blocks``); its one API endpoint is ``/segment``."""
    import gradio as gr

    out_root = Path(out_root or tempfile.mkdtemp(prefix="pnp-ovss-app-out-"))
    has_key = bool(os.environ.get("OPENAI_API_KEY"))

    def run(files, classes, vocabulary, gpt4o, mode, layer, head, threshold, postprocess, drop_iter,
            progress=gr.Progress()):  # noqa: B008 - how Gradio hands a handler its progress bar
        settings = Settings(classes=classes or "", vocabulary=VOCABULARIES.get(vocabulary) if vocabulary else None,
                            gpt4o=bool(gpt4o), mode=mode, layer=_int_or_none(layer), head=_int_or_none(head),
                            threshold=None if threshold in (None, "") else float(threshold), postprocess=postprocess,
                            drop_iter=int(drop_iter))
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        out_dir = Path(tempfile.mkdtemp(prefix="request-", dir=out_root))
        try:
            outcome = segment_images(paths, settings, model=model, backend=backend, device=device, out_dir=out_dir,
                                     progress=lambda fraction, text: progress(fraction, desc=text))
        except Exception as exc:  # noqa: BLE001 - every failure is said on the page, in words
            log.warning("request failed: %s", error_text(exc))
            return f"**Could not segment:** {error_text(exc)}", [], [], [], []
        n_classes = settings.class_spec().count(",") + 1
        status = [f"Segmented {len(outcome.results)} image(s) into {n_classes} class(es), mode {settings.mode}."]
        status += [f"- {n}" for n in outcome.notes]
        overlays = [(r.overlay, r.image_id) for r in outcome.results]
        masks = [m for r in outcome.results for m in r.masks]
        heatmaps = [h for r in outcome.results for h in r.heatmaps]
        downloads = [str(r.label_png) for r in outcome.results]
        return "\n".join(status), overlays, masks, heatmaps, downloads

    with gr.Blocks(title="pnp-ovss: open-vocabulary segmentation") as page:
        gr.Markdown("# pnp-ovss\nDrop photos, type what to find: PnP-OVSS (BLIP cross-attention GradCAM + Salience "
                    "Drop + DenseCRF) segments them, and shows how each mask came to be.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="images", file_count="multiple", file_types=["image"], type="filepath")
                classes = gr.Textbox(label="classes (comma-separated)", placeholder="cat, sofa, lamp")
                vocabulary = gr.Dropdown(label="or a benchmark's vocabulary", choices=[""] + list(VOCABULARIES),
                                         value="")
                gpt4o = gr.Checkbox(label="ask GPT-4o which of the classes each image shows", value=False,
                                    interactive=has_key,
                                    info=None if has_key else "set OPENAI_API_KEY before starting the app to use it")
                with gr.Accordion("settings", open=False):
                    mode = gr.Radio(["clean", "faithful"], value="clean", label="mode")
                    layer = gr.Number(label="cross-attention layer (empty: the backend's default)", precision=0)
                    head = gr.Number(label="head (empty: the backend's default)", precision=0)
                    threshold = gr.Number(label="threshold (empty: the backend's default)")
                    postprocess = gr.Dropdown(list(POSTPROCESS), value="blur+crf", label="post-processing")
                    drop_iter = gr.Slider(1, 8, value=4, step=1, label="Salience Drop iterations")
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                gr.Examples(demo_examples(), inputs=[files, classes], label="demo images")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                overlays = gr.Gallery(label="overlay (legend underneath)", columns=2, height="auto", object_fit="contain",
                                      fit_columns=False, elem_id="overlay")
                downloads = gr.File(label="label PNGs (dataset ids: 0 background, then the classes in order)",
                                    file_count="multiple")
                masks = gr.Gallery(label="each class's mask", columns=4, height="auto", object_fit="contain",
                                   fit_columns=False)
                heatmaps = gr.Gallery(label="GradCAM per class and drop iteration (shaded: patches dropped before it; "
                                            "white: picked at it)", columns=4, height="auto", object_fit="contain",
                                      fit_columns=False)
        button.click(run, inputs=[files, classes, vocabulary, gpt4o, mode, layer, head, threshold, postprocess,
                                  drop_iter], outputs=[status, overlays, masks, heatmaps, downloads], api_name="segment")
    return page


def _int_or_none(value):
    if value is None or value == "":
        return None
    return int(value)


def warm_model(model: str | None, backend: str, device: str) -> str:
    """Load the model once, before the first request (the stage's cache keeps it); returns a line saying what."""
    from .config import plan_runs
    from .stages.gradcam import model_for

    cfg = app_config(Settings(classes="thing"), model, backend, device)
    params = next(p for p in plan_runs(cfg)[1].values() if p["stage"] == "gradcam")
    loaded = model_for(params, cfg["gradcam"]["device"])
    return f"{params['model']} ({loaded.backend.name}) on {loaded.device}"


def _cmd_app(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("the app needs Gradio: pip install -e \".[app]\" (or pip install gradio)") from None
    print(f"pnp-ovss app: loading {warm_model(args.model, args.backend, args.device)}", flush=True)
    page = build_app(model=args.model, backend=args.backend, device=args.device)
    page.queue().launch(server_name=args.host, server_port=args.port, show_error=False, share=False)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="a page in the browser: photos and words in, masks out (needs the [app] extra)")
    p.add_argument("--model", help="ITM model id or local directory (default Salesforce/blip-itm-large-flickr)")
    p.add_argument("--backend", choices=["auto", "blip", "bridgetower"], default="auto")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=_cmd_app)
