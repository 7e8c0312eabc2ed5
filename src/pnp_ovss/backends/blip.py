"""BLIP ITM (the released model) behind the backend interface.

The functions stay where they were written (:mod:`pnp_ovss.model` loads, :mod:`pnp_ovss.gradcam`
preprocesses, tokenises with the [ENC] swap and forms the fast token maps); this module only routes the
interface to them, so every output is what it was before the interface existed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .base import Backend, Defaults, LoadedModel


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


class BlipBackend(Backend):
    name = "blip"
    model_type = "blip"
    has_faithful_reference = True
    defaults = Defaults(layer=8, head=9, threshold=0.15, chosen_by="the authors' released setting (--layer 8 --head 9 --threshold 0.15)")
    tiny_description = "tiny random BLIP ITM (BERT WordPiece tokenizer with [DEC]/[ENC])"

    def load(self, model_id: str, image_size: int, device: str) -> LoadedModel:
        from ..model import load_blip

        model, tokenizer = load_blip(model_id, image_size=image_size, device=device)
        return LoadedModel(self, model, tokenizer)

    def layers_heads(self, model) -> tuple[int, int]:
        cfg = model.config.text_config
        return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)

    def check_layer_head(self, model, layer: int, head: int) -> None:
        from ..gradcam import check_layer_head

        check_layer_head(model, layer, head)

    def patch_size(self, model) -> int:
        return int(model.config.vision_config.patch_size)

    def preprocess(self, image, size: int, released_ade: bool = False, model=None) -> torch.Tensor:
        from ..gradcam import preprocess_image

        return preprocess_image(image, size, released_ade)

    def tokenize(self, tokenizer, class_names, keep_spaces: bool = False, pad_to: int | None = None):
        from ..gradcam import tokenize_captions

        return tokenize_captions(tokenizer, class_names, pad_to=pad_to, keep_spaces=keep_spaces)

    def token_maps(self, model, pixel_values, tokens, layer: int, head: int, autocast: str = "none") -> torch.Tensor:
        from ..gradcam import fast_token_maps

        return fast_token_maps(model, pixel_values, tokens, layer, head, autocast)

    def one_pass_token_maps(self, model, pixel_values, tokens, layers, autocast: str = "none") -> dict:
        from ..gradcam import one_pass_token_maps

        return one_pass_token_maps(model, pixel_values, tokens, layers, autocast)

    def reference_token_maps(self, model, pixel_values, tokens, layer: int, head: int) -> torch.Tensor:
        """Full forward/backward of ``BlipForImageTextRetrieval`` (through the ViT too), the cross-attention
        probabilities of every text layer kept with ``retain_grad`` and every layer's maps formed; then
        layer/head cut to the batch's real longest caption."""
        from ..gradcam import gradcam_map

        grid = pixel_values.shape[-1] // self.patch_size(model)
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
                out.itm_score[:, 1].sum().backward()
                every_layer = [gradcam_map(p.detach(), p.grad, tokens.attention_mask, grid) for p in saved]
                model.zero_grad(set_to_none=True)
        finally:
            for h in handles:
                h.remove()
        return every_layer[layer - 1][:, head, : tokens.longest - 1]

    def write_tiny(self, directory, seed: int = 0) -> Path:
        from ..model import write_tiny_model

        return write_tiny_model(directory, seed=seed)
