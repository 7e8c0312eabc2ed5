"""The interface a vision-language backend implements (docs/backends.md).

A backend knows how to load its checkpoint, turn an image into the model's input, turn a batch of class
lists into caption tokens with the token span of every class, and compute the cross-attention GradCAM token
maps of one (layer, head) from the image-text-matching score. Everything after the token maps — Salience
Drop, ranking, grouping, the Zarr store, refine and evaluate — is backend-free (:mod:`pnp_ovss.gradcam`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..gradcam import backend_gradcam_batch, gradcam_map
from . import BackendFacts, Defaults


class Backend(ABC):
    """One vision-language model family. Instances are stateless; the loaded model and tokenizer travel in
    a :class:`LoadedModel`."""

    #: the registry's facts of this backend (:data:`pnp_ovss.backends.BACKEND_FACTS`)
    facts: BackendFacts

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def model_type(self) -> str:
        return self.facts.model_type

    @property
    def has_faithful_reference(self) -> bool:
        return self.facts.has_faithful_reference

    @property
    def defaults(self) -> Defaults:
        return self.facts.defaults

    @property
    def tiny_description(self) -> str:
        return self.facts.tiny_description

    @abstractmethod
    def load(self, model_id: str, image_size: int, device: str) -> "LoadedModel":
        """Load the checkpoint (local directory or Hub id; offline → :class:`pnp_ovss.errors.ModelError`),
        frozen, in eval mode, on ``device``."""

    @abstractmethod
    def layers_heads(self, model) -> tuple[int, int]:
        """Number of cross-attention layers (1-based ``layer``) and heads (0-based ``head``)."""

    @abstractmethod
    def patch_size(self, model) -> int:
        """Pixels per patch side: the Salience Drop blocks and the grid (S / patch)."""

    @abstractmethod
    def preprocess(self, image: Image.Image, size: int, released_ade: bool = False, model=None) -> torch.Tensor:
        """PIL image → float32 [3, S, S] as ``model`` (loaded by :meth:`load`) takes it; ``released_ade``:
        the released ADE20K input (§3, §10.1), for backends with a faithful reference."""

    @abstractmethod
    def tokenize(self, tokenizer, class_names: list[list[str]], keep_spaces: bool = False, pad_to: int | None = None):
        """One caption per image → :class:`pnp_ovss.gradcam.CaptionTokens` (row 0 is the token whose
        output scores the match; then the prefix rows, each class's pieces in order, the end token)."""

    @abstractmethod
    def probs_and_grads(self, model, pixel_values: torch.Tensor, tokens, layers: list[int], autocast: str = "none"):
        """The fast forward/backward: no gradient below ``min(layers)``, the cross-attention probabilities of
        every listed layer taken with forward hooks, their gradients from one ``autograd.grad`` of
        ``J = Σ_b logit[b, match]``. Returns ``[(probs, grad)]`` in the order of ``layers``, each
        [B, heads, L, 1+P²]."""

    @abstractmethod
    def cross_attention_modules(self, model) -> list:
        """The module of every cross-attention layer (1..layers) whose forward returns ``(output, probs)``."""

    @abstractmethod
    def match_logits(self, model, pixel_values: torch.Tensor, tokens) -> torch.Tensor:
        """The model's own full forward: ITM logits [B, 2] (column 1 = match)."""

    def token_maps(self, model, pixel_values: torch.Tensor, tokens, layer: int, head: int, autocast: str = "none") -> torch.Tensor:
        """GradCAM token maps of ``layer``/``head``: float32 [B, L-1, P, P] (row 0 and the image's CLS column
        dropped), the fast way (:meth:`probs_and_grads` of that layer alone, only ``head`` formed)."""
        self.check_layer_head(model, layer, head)
        grid = pixel_values.shape[-1] // self.patch_size(model)
        ((probs, grad),) = self.probs_and_grads(model, pixel_values, tokens, [layer], autocast)
        return gradcam_map(probs[:, head].detach(), grad[:, head], tokens.attention_mask, grid)

    def one_pass_token_maps(self, model, pixel_values: torch.Tensor, tokens, layers: list[int], autocast: str = "none") -> dict:
        """Every head of every layer in ``layers`` from one forward/backward (backward once from the lowest
        layer): ``{layer: float32 [B, heads, L-1, P, P]}``, ``[layer][:, head]`` equal to :meth:`token_maps`."""
        layers = sorted(set(int(layer) for layer in layers))
        for layer in layers:
            self.check_layer_head(model, layer, 0)
        grid = pixel_values.shape[-1] // self.patch_size(model)
        pairs = self.probs_and_grads(model, pixel_values, tokens, layers, autocast)
        return {layer: gradcam_map(p.detach(), g, tokens.attention_mask, grid) for layer, (p, g) in zip(layers, pairs)}

    @abstractmethod
    def write_tiny(self, directory: str | Path, seed: int = 0) -> Path:
        """A tiny randomly initialised checkpoint with its tokenizer (and image processor) files, loadable
        by :meth:`load` like the real one."""

    def use_fused_vision_attention(self, model) -> str:
        """Opt-in (``gradcam.vision_attention: sdpa``): let the vision tower's self-attention, whose weights
        nothing reads, run through ``torch.nn.functional.scaled_dot_product_attention``. Returns what was done,
        in words. The default does nothing (a backend whose vision tower is fused already says so)."""
        return f"{self.name}: the vision tower is left as it is"

    def check_layer_head(self, model, layer: int, head: int) -> None:
        layers, heads = self.layers_heads(model)
        if not 1 <= layer <= layers:
            raise ValueError(f"layer {layer} out of range: the {self.name} model has cross-attention layers 1..{layers} (1-based)")
        if not 0 <= head < heads:
            raise ValueError(f"head {head} out of range: the {self.name} model has heads 0..{heads - 1} (0-based)")


@contextlib.contextmanager
def kept_probabilities(modules: dict[int, torch.nn.Module]):
    """Inside the block, the attention probabilities (``output[1]``) each module of ``{layer: module}``
    returns are kept in the dict yielded, by layer (forward hooks, removed on leaving)."""
    kept: dict[int, torch.Tensor] = {}

    def keeper(layer):
        def keep(_module, _inputs, output):
            kept[layer] = output[1]

        return keep

    handles = [module.register_forward_hook(keeper(layer)) for layer, module in modules.items()]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def match_gradients(logits: torch.Tensor, kept: dict[int, torch.Tensor], layers: list[int]) -> list:
    """``[(probs, ∂J/∂probs)]`` of ``layers`` in order, from one ``autograd.grad`` of ``J = Σ_b logit[b, 1]``
    (the ITM head's "match" logit)."""
    match = logits[:, 1].float().sum()
    probs = [kept[layer] for layer in layers]
    return list(zip(probs, torch.autograd.grad(match, probs)))


@dataclass
class LoadedModel:
    """A backend with its loaded model and tokenizer: what the GradCAM stage holds."""

    backend: Backend
    model: object
    tokenizer: object

    @property
    def patch_size(self) -> int:
        return self.backend.patch_size(self.model)

    @property
    def device(self) -> str:
        """Where the weights are (``cpu``, ``cuda:0``)."""
        return str(next(self.model.parameters()).device)

    @property
    def revision(self) -> str | None:
        """The Hub commit of the checkpoint (None for a local directory)."""
        return getattr(self.model, "pnp_revision", None)

    def preprocess(self, image: Image.Image, size: int, released_ade: bool = False) -> torch.Tensor:
        return self.backend.preprocess(image, size, released_ade, self.model)

    def gradcam_batch(self, pixel_values: torch.Tensor, class_names: list[list[str]], params: dict):
        return backend_gradcam_batch(self.backend, self.model, self.tokenizer, pixel_values, class_names, params)
