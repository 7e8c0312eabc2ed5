"""Search speed (issue #11): the one-pass maps against one GradCAM pass per (layer, head), and CLIP scoring.

Builds BLIP-ITM-large (as benchmarks/gradcam_speed.py) and CLIP ViT-L/14-336 with random weights (no
download). On the same images and captions (3 classes per image) it times, in one run:

* one GradCAM pass (one (layer, head), one drop iteration: what the search needs per setting without the
  one pass), repeated for every searched (layer, head);
* the one pass: every head of every searched layer from one forward/backward (``Backend.one_pass_token_maps``);
* CLIP scoring: masked images per second (each setting scores K masked images per image; the all-zero
  negative image is the same everywhere and goes through CLIP once).

and prints the cost per searched setting both ways for ``layers × heads × thresholds`` settings.

    python benchmarks/search_speed.py                       # 4 layers x 3 heads x 5 thresholds = 60 settings
    python benchmarks/search_speed.py --device cuda --images 8
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradcam_speed import CLASS_SETS, benchmark_tokenizer, large_blip_config, timed  # noqa: E402

from pnp_ovss.backends import get_backend  # noqa: E402
from pnp_ovss.backends.blip import fast_token_maps, tokenize_captions  # noqa: E402
from pnp_ovss.backends.loading import resolve_device  # noqa: E402
from pnp_ovss.search.reward import masked_images, reward_masks  # noqa: E402


def clip_large():
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14),
        projection_dim=768,
    )
    return CLIPModel(cfg).eval().requires_grad_(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 7, 8, 9])
    ap.add_argument("--heads", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--thresholds", type=int, default=5, help="how many thresholds (default 5)")
    ap.add_argument("--clip-images", type=int, default=8, help="masked images timed through CLIP")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = __import__("transformers").BlipForImageTextRetrieval(large_blip_config()).eval().requires_grad_(False).to(device)
    tok = benchmark_tokenizer()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({where}); torch {torch.__version__}")
    x = torch.randn(args.images, 3, 336, 336, generator=torch.Generator().manual_seed(0)).to(device)
    names = [CLASS_SETS[i % len(CLASS_SETS)] for i in range(args.images)]
    tokens = tokenize_captions(tok, names).to(device)
    pairs = [(layer, head) for layer in args.layers for head in args.heads]
    settings = len(pairs) * args.thresholds

    fast_token_maps(model, x[:1], tokenize_captions(tok, names[:1]).to(device), 8, 9)  # warm-up
    _, one_gradcam = timed(lambda: fast_token_maps(model, x, tokens, pairs[0][0], pairs[0][1]), device)
    per_pair, per_pair_s = timed(lambda: {p: fast_token_maps(model, x, tokens, *p) for p in pairs}, device)
    blip = get_backend("blip")
    one_pass, one_pass_s = timed(lambda: blip.one_pass_token_maps(model, x, tokens, args.layers), device)
    same = all(torch.equal(one_pass[layer][:, head], per_pair[(layer, head)]) for layer, head in pairs)
    model = None  # free BLIP before CLIP is built

    clip = clip_large().to(device)
    grid = one_pass[args.layers[0]].shape[-1]
    maps = np.random.default_rng(0).random((3, grid, grid)).astype(np.float32)
    masks = reward_masks(maps, 0.15, 336)
    image = np.random.default_rng(1).random((336, 336, 3)).astype(np.float32)
    batch = np.concatenate([masked_images(image, masks)] * (args.clip_images // 4 + 1))[: args.clip_images]
    pix = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device)
    with torch.no_grad():
        clip.get_image_features(pixel_values=pix[:1])  # warm-up
        _, clip_s = timed(lambda: clip.get_image_features(pixel_values=pix), device)
    clip_rate = args.clip_images / clip_s
    masked_per_setting = args.images * 3  # K masked images per image; the all-zero negative is cached
    clip_per_setting = masked_per_setting / clip_rate

    print()
    print(f"{args.images} images, 3 classes each; {len(args.layers)} layers x {len(args.heads)} heads x "
          f"{args.thresholds} thresholds = {settings} settings; BLIP-ITM-large and CLIP ViT-L/14-336, random weights")
    print("| what | seconds |")
    print("|---|---|")
    print(f"| one GradCAM pass (one (layer, head), one drop iteration) | {one_gradcam:.2f} |")
    print(f"| one pass per (layer, head): {len(pairs)} passes | {per_pair_s:.2f} |")
    print(f"| the one pass: every head of {len(args.layers)} layers | {one_pass_s:.2f} |")
    print(f"| CLIP, {masked_per_setting} masked images (one setting) | {clip_per_setting:.2f} |")
    print()
    per_setting_one = (one_pass_s + settings * clip_per_setting) / settings
    per_setting_pairs = (per_pair_s + settings * clip_per_setting) / settings
    print(f"cost per setting: one pass {per_setting_one:.2f} s, a pass per (layer, head) {per_setting_pairs:.2f} s "
          f"({per_setting_pairs / per_setting_one:.2f}x)")
    print(f"the one pass costs {one_pass_s / one_gradcam:.2f}x one GradCAM pass (target <= 2x); CLIP "
          f"{clip_rate:.1f} masked images/s; one-pass maps equal to the per-(layer, head) maps: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
