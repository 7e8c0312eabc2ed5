"""The straightforward GradCAM path: the released code's cost structure (ALGORITHM.md §4.2–§4.4).

Every parameter requires a gradient, the full model runs forward and backward (through the vision tower
too), the captions are padded to 500 tokens, the cross-attention probabilities of every layer keep their
gradient (``retain_grad``) and every layer's and head's GradCAM map is formed — then only layer L / head H is
used. Each backend holds its own (``Backend.reference_token_maps``); the salience-drop loop is the package's
(:func:`pnp_ovss.gradcam.salience_drop`), so the comparison with the fast path isolates the forward/backward
machinery.

Faithful mode ranks patches on rows 3..L-3 with L the batch's *real* longest caption, so the maps are cut to
that length before the loop (the padding rows are zero anyway).
"""

from __future__ import annotations

import numpy as np

from pnp_ovss.backends import get_backend
from pnp_ovss.backends.checkpoints import MAX_TEXT_LEN
from pnp_ovss.gradcam import ImageGradcam, drop_with, model_device


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
        return bk.reference_token_maps(model, x, tokens, layer, head).cpu().numpy().astype(np.float32)

    return drop_with(token_maps, model, pixel_values, tokens, params, bk.patch_size(model))
