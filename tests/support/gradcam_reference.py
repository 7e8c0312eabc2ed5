"""The straightforward GradCAM path: the released code's cost structure (ALGORITHM.md §4.2–§4.4).

Every parameter requires a gradient, the full model runs forward and backward (through the vision tower
too), the captions are padded to 500 tokens, the cross-attention probabilities of every layer keep their
gradient (``retain_grad``) and every layer's and head's GradCAM map is formed — then only layer L / head H is
used. It uses each backend's own forward (``Backend.match_logits``) and cross-attention modules; the salience-drop loop is the package's
(:func:`pnp_ovss.gradcam.salience_drop`), so the comparison with the fast path isolates the forward/backward
machinery.

Faithful mode ranks patches on rows 3..L-3 with L the batch's *real* longest caption, so the maps are cut to
that length before the loop (the padding rows are zero anyway).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from pnp_ovss.backends import get_backend
from pnp_ovss.backends.checkpoints import MAX_TEXT_LEN
from pnp_ovss.gradcam import ImageGradcam, drop_with, gradcam_map, model_device


@contextlib.contextmanager
def all_parameters_require_grad(model):
    """Every parameter requires a gradient inside the block (the straightforward paths' cost structure)."""
    before = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), before):
            p.requires_grad_(r)


def reference_token_maps(backend, model, pixel_values: torch.Tensor, tokens, layer: int, head: int) -> torch.Tensor:
    """The same maps the straightforward way: the model's own forward and backward with every parameter
    requiring a gradient, every layer's cross-attention probabilities kept (``retain_grad``) and every
    layer's maps formed; then ``layer``/``head``, cut to the batch's real longest caption. What the fast
    path is tested against."""
    grid = pixel_values.shape[-1] // backend.patch_size(model)
    saved = []

    def keep(_module, _inputs, output):
        probs = output[1]
        probs.retain_grad()
        saved.append(probs)

    handles = [m.register_forward_hook(keep) for m in backend.cross_attention_modules(model)]
    try:
        with all_parameters_require_grad(model), torch.enable_grad():
            model.zero_grad(set_to_none=True)
            backend.match_logits(model, pixel_values, tokens)[:, 1].sum().backward()
            every_layer = [gradcam_map(p.detach(), p.grad, tokens.attention_mask, grid) for p in saved]
            model.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
    return every_layer[layer - 1][:, head, : tokens.longest - 1]


def reference_gradcam_batch(
    model, tokenizer, pixel_values, class_names, params, pad_to: int = MAX_TEXT_LEN, backend: str = "blip"
) -> list[ImageGradcam]:
    """Same contract as :func:`pnp_ovss.gradcam.backend_gradcam_batch`, computed the straightforward way."""
    bk = get_backend(backend)
    device = model_device(model)
    keep_spaces = bool(params.get("keep_spaces", False))
    tokens = bk.tokenize(tokenizer, class_names, keep_spaces=keep_spaces, pad_to=pad_to).to(device)
    layer, head = int(params["layer"]), int(params["head"])
    bk.check_layer_head(model, layer, head)

    def token_maps(x):
        return reference_token_maps(bk, model, x, tokens, layer, head).cpu().numpy().astype(np.float32)

    return drop_with(token_maps, model, pixel_values, tokens, params, bk.patch_size(model))
