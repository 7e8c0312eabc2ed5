"""GradCAM + Salience Drop speed: the fast path against the straightforward reference path (issue #3).

Builds a full-size model with random weights (no download). ``--backend blip`` (default): BLIP-ITM-large,
ViT-L/16 (24 blocks, width 1024, 16 heads, trained grid 24×24 at 384 px, run at 336 px → 21×21) and the
BERT-base text encoder with cross-attention from width 1024. ``--backend bridgetower``: BridgeTower-base
(``BridgeTower/bridgetower-base-itm-mlm``: RoBERTa-base and CLIP ViT-B/16 at 288 px, 6 cross-modal layers of
width 768, 12 heads) or ``--bridgetower-size large`` (``bridgetower-large-itm-mlm-itc``: RoBERTa-large, CLIP
ViT-L/14 at 294 px, width 1024, 16 heads). Both paths run on the same images and captions (3 classes per
image) with 4 drop iterations, after a short warm-up of each; the script prints seconds per image, peak
memory and the ratio, and checks that both paths give the same maps.

    python benchmarks/gradcam_speed.py --images 2          # a few minutes on 2 CPU cores
    python benchmarks/gradcam_speed.py --images 2 --backend bridgetower
    python benchmarks/gradcam_speed.py --images 8 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from support.gradcam_reference import reference_gradcam_batch  # noqa: E402

from pnp_ovss.backends import get_backend  # noqa: E402
from pnp_ovss.gradcam import backend_gradcam_batch  # noqa: E402
from pnp_ovss.backends.blip import DEC_TOKEN, ENC_TOKEN, tiny_vocab  # noqa: E402
from pnp_ovss.backends.loading import resolve_device  # noqa: E402

CLASS_SETS = [
    ["person", "pottedplant", "sofa"],
    ["dog", "car", "tvmonitor"],
    ["cat", "chair", "table"],
    ["bus", "bicycle", "motorbike"],
]


def large_blip_config():
    from transformers import BlipConfig

    vision = dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=384, patch_size=16, layer_norm_eps=1e-6, initializer_range=0.02,
    )
    text = dict(
        vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=512, pad_token_id=0, sep_token_id=102, bos_token_id=30522,
        layer_norm_eps=1e-12, initializer_range=0.02,
    )
    return BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=256)


def bridgetower_config(size: str):
    """The published BridgeTower ITM architectures (config values of the Hub checkpoints)."""
    from transformers import BridgeTowerConfig

    if size == "large":
        width, layers, heads, inter, vision = 1024, 24, 16, 4096, dict(hidden_size=1024, num_hidden_layers=24, patch_size=14, image_size=294)
    else:
        width, layers, heads, inter, vision = 768, 12, 12, 3072, dict(hidden_size=768, num_hidden_layers=12, patch_size=16, image_size=288)
    text = dict(vocab_size=50265, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=inter, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return BridgeTowerConfig(text_config=text, vision_config=dict(vision, share_layernorm=True), hidden_size=width,
                             num_hidden_layers=6, num_attention_heads=heads, share_cross_modal_transformer_layers=False,
                             share_link_tower_layers=False)


def build_model(backend: str, bridgetower_size: str):
    """(model, tokenizer, default image size, default layer) with random weights, in eval mode, frozen."""
    import transformers

    if backend == "bridgetower":
        from pnp_ovss.backends.bridgetower import tiny_bpe_tokenizer

        config = bridgetower_config(bridgetower_size)
        model = transformers.BridgeTowerForImageAndTextRetrieval._from_config(config, attn_implementation="eager")
        return model, tiny_bpe_tokenizer(), config.vision_config.image_size, get_backend("bridgetower").defaults
    return transformers.BlipForImageTextRetrieval(large_blip_config()), benchmark_tokenizer(), 336, get_backend("blip").defaults


def benchmark_tokenizer():
    """A BERT WordPiece tokenizer with BLIP's layout (30522 pieces + [DEC] + [ENC]) built from the tiny
    vocabulary padded with unused slots: the class names split into realistic piece counts."""
    from transformers import BertTokenizer

    base = [w for w in tiny_vocab() if w not in (DEC_TOKEN, ENC_TOKEN)]
    base += [f"[unused{i}]" for i in range(1000, 1000 + 30522 - len(base))]
    vocab = {w: i for i, w in enumerate(base + [DEC_TOKEN, ENC_TOKEN])}
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token=DEC_TOKEN, additional_special_tokens=[ENC_TOKEN])


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 10 ms from /proc), and the
    peak CUDA allocation on a GPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = self.start = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    def __enter__(self):
        self.start = self.peak = self.rss()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.cuda_peak = torch.cuda.max_memory_allocated()
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def timed(fn, device):
    """(fn(), seconds), the GPU's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2, help="images (default 2)")
    ap.add_argument("--batch-size", type=int, default=0, help="images per forward/backward (default: all)")
    ap.add_argument("--backend", default="blip", choices=["blip", "bridgetower"])
    ap.add_argument("--bridgetower-size", default="base", choices=["base", "large"])
    ap.add_argument("--image-size", type=int, default=0, help="default: 336 for BLIP, the trained size for BridgeTower")
    ap.add_argument("--drop-iter", type=int, default=4)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"], help="fast path only (GPU)")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, tok, native_size, defaults = build_model(args.backend, args.bridgetower_size)
    model.eval().requires_grad_(False).to(device)
    backend = get_backend(args.backend)
    args.image_size = args.image_size or native_size
    n_params = sum(p.numel() for p in model.parameters())
    what = "BLIP-ITM-large" if args.backend == "blip" else f"BridgeTower-{args.bridgetower_size} ITM"
    print(f"built {what} with random weights ({n_params / 1e6:.0f} M parameters) in {time.perf_counter() - t0:.0f} s")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({where}); torch {torch.__version__}")

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, args.image_size, args.image_size, generator=g)
    names = [CLASS_SETS[i % len(CLASS_SETS)] for i in range(args.images)]
    faithful = backend.has_faithful_reference  # BLIP: the released rules; BridgeTower: the clean ones
    params = dict(layer=defaults.layer, head=defaults.head, drop_iter=args.drop_iter, drop_patches=10,
                  exclude_sep_rows=not faithful, mean_last_class=not faithful, keep_spaces=not faithful,
                  autocast=args.autocast)
    bs = args.batch_size or args.images

    def fast_batch(model, tok, x, names, params):
        return backend_gradcam_batch(backend, model, tok, x, names, params)

    def reference_batch(model, tok, x, names, params):
        return reference_gradcam_batch(model, tok, x, names, params, backend=args.backend)

    def run(path):
        fn = fast_batch if path == "fast" else reference_batch
        out = []
        for i in range(0, args.images, bs):
            out += fn(model, tok, x[i : i + bs].to(device), names[i : i + bs], params)
        return out

    results = {}
    baseline = PeakMemory.rss()  # the model's weights and the inputs
    for path in ("fast", "reference"):  # fast first, so its peak is not inflated by the reference's
        with PeakMemory(device) as mem:
            if not args.no_warmup:  # one image, one iteration: lazy initialisations out of the timing
                fn = fast_batch if path == "fast" else reference_batch
                fn(model, tok, x[:1].to(device), names[:1], dict(params, drop_iter=1))
            out, seconds = timed(lambda: run(path), device)
        results[path] = (out, seconds, mem)
        print(f"  {path}: {seconds:.1f} s", flush=True)

    fast, ref = results["fast"][0], results["reference"][0]
    same = all(
        np.allclose(a.maps, b.maps, rtol=1e-3, atol=1e-5 * max(float(np.abs(b.maps).max()), 1e-30))
        and np.array_equal(a.dropped, b.dropped)
        for a, b in zip(fast, ref)
    )

    gib = 1024**3
    print()
    print(f"GradCAM + Salience Drop, {args.images} images, batch {bs}, {args.image_size} px, "
          f"{args.drop_iter} drop iterations, 3 classes per image, {what} layer {defaults.layer} head {defaults.head}")
    print(f"RSS before both paths (weights, inputs): {baseline / 1024**3:.2f} GiB")
    header = "| path      | s / image | peak RSS (GiB) | peak - before (GiB) |"
    if device.type == "cuda":
        header += " peak CUDA alloc (GiB) |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for path in ("fast", "reference"):
        _, seconds, mem = results[path]
        row = f"| {path:<9} | {seconds / args.images:9.2f} | {mem.peak / gib:14.2f} | {(mem.peak - baseline) / gib:19.2f} |"
        if device.type == "cuda":
            row += f" {mem.cuda_peak / gib:21.2f} |"
        print(row)
    ratio = results["reference"][1] / results["fast"][1]
    print(f"\nspeed-up reference / fast: {ratio:.2f}x (target >= 3.5x); maps and dropped patches equal: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
