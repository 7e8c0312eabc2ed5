"""BLIP ITM (the released model) behind the backend interface.

The functions stay where they were written (:mod:`pnp_ovss.model` loads, :mod:`pnp_ovss.gradcam`
preprocesses, tokenises with the [ENC] swap and forms the fast token maps); this module only routes the
interface to them, so every output is what it was before the interface existed.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from .base import Backend, Defaults, LoadedModel


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

    def probs_and_grads(self, model, pixel_values, tokens, layers, autocast: str = "none"):
        from ..gradcam import blip_probs_and_grads

        return blip_probs_and_grads(model, pixel_values, tokens, layers, autocast)

    def cross_attention_modules(self, model) -> list:
        return [block.crossattention.self for block in model.text_encoder.encoder.layer]

    def match_logits(self, model, pixel_values, tokens) -> torch.Tensor:
        """``BlipForImageTextRetrieval`` forward with the ITM head (through the ViT too)."""
        return model(
            input_ids=tokens.input_ids,
            pixel_values=pixel_values,
            attention_mask=tokens.attention_mask,
            use_itm_head=True,
            interpolate_pos_encoding=True,
        ).itm_score

    def use_fused_vision_attention(self, model) -> str:
        layers = model.vision_model.encoder.layers
        for layer in layers:
            layer.self_attn.forward = types.MethodType(_sdpa_self_attention, layer.self_attn)
        return f"blip: the {len(layers)} self-attention layers of the vision tower use torch SDPA"

    def write_tiny(self, directory, seed: int = 0) -> Path:
        from ..model import write_tiny_model

        return write_tiny_model(directory, seed=seed)


def _sdpa_self_attention(self, hidden_states: torch.Tensor, **kwargs):
    """``BlipAttention.forward`` through ``scaled_dot_product_attention``: the same projections, the same
    scale (head_dim ** -0.5, SDPA's default), no mask; dropout only in training (the model is frozen in eval).
    The attention weights are not formed (None is returned in their place: nothing reads them)."""
    bsz, tgt_len, embed_dim = hidden_states.size()
    qkv = self.qkv(hidden_states).reshape(bsz, tgt_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    context = torch.nn.functional.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale)
    context = context.permute(0, 2, 1, 3).reshape(bsz, tgt_len, self.embed_dim)
    return self.projection(context), None
