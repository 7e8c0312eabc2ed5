"""The straightforward GradCAM path: the released code's cost structure (ALGORITHM.md §4.2–§4.4).

Every parameter requires a gradient, the full model runs forward and backward (through the ViT too), the
captions are padded to 500 tokens, the cross-attention probabilities of all 12 text layers keep their
gradient (``retain_grad``) and every layer's and head's GradCAM map is formed — then only layer L / head H
is used. The salience-drop loop is the package's own (:func:`pnp_ovss.gradcam.salience_drop`), so the
comparison with the fast path isolates the forward/backward machinery.

Faithful mode ranks patches on rows 3..L-3 with L the batch's *real* longest caption, so the maps are cut to
that length before the loop (the 500-token padding rows are zero anyway).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from pnp_ovss.gradcam import (
    MAX_TEXT_LEN,
    ImageGradcam,
    check_layer_head,
    gradcam_map,
    model_device,
    drop_with,
    tokenize_captions,
)


@contextlib.contextmanager
def all_parameters_require_grad(model):
    before = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), before):
            p.requires_grad_(r)


def reference_token_maps(model, pixel_values, tokens, layer: int, head: int) -> torch.Tensor:
    """[B, L_longest - 1, P, P] from a full forward/backward with every layer's maps formed."""
    grid = pixel_values.shape[-1] // model.config.vision_config.patch_size
    blocks = model.text_encoder.encoder.layer
    saved = []

    def keep(_module, _inputs, output):
        probs = output[1]
        probs.retain_grad()
        saved.append(probs)

    handles = [blk.crossattention.self.register_forward_hook(keep) for blk in blocks]
    try:
        with all_parameters_require_grad(model), torch.enable_grad():
            model.zero_grad(set_to_none=True)
            out = model(
                input_ids=tokens.input_ids,
                pixel_values=pixel_values,
                attention_mask=tokens.attention_mask,
                use_itm_head=True,
                interpolate_pos_encoding=True,
            )
            match = out.itm_score[:, 1].sum()
            match.backward()
            every_layer = [gradcam_map(p.detach(), p.grad, tokens.attention_mask, grid) for p in saved]
            model.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
    return every_layer[layer - 1][:, head, : tokens.longest - 1]


def reference_gradcam_batch(model, tokenizer, pixel_values, class_names, params, pad_to: int = MAX_TEXT_LEN) -> list[ImageGradcam]:
    """Same contract as :func:`pnp_ovss.gradcam.gradcam_batch`, computed the straightforward way."""
    device = model_device(model)
    tokens = tokenize_captions(tokenizer, class_names, pad_to=pad_to).to(device)
    layer, head = int(params["layer"]), int(params["head"])
    check_layer_head(model, layer, head)

    def token_maps(x):
        return reference_token_maps(model, x, tokens, layer, head).cpu().numpy().astype(np.float32)

    return drop_with(token_maps, model, pixel_values, tokens, params)
