"""The interface a vision-language backend implements (DESIGN.md "Plug-and-play").

A backend knows how to load its checkpoint, turn an image into the model's input, turn a batch of class
lists into caption tokens with the token span of every class, and compute the cross-attention GradCAM token
maps of one (layer, head) from the image-text-matching score. Everything after the token maps — Salience
Drop, ranking, grouping, the Zarr store, refine and evaluate — is backend-free (:mod:`pnp_ovss.gradcam`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image


@dataclass(frozen=True)
class Defaults:
    """A backend's recorded default setting and how it was chosen."""

    layer: int
    head: int
    threshold: float
    chosen_by: str


class Backend(ABC):
    """One vision-language model family. Instances are stateless; the loaded model and tokenizer travel in
    a :class:`LoadedModel`."""

    #: the name used in the config (``gradcam.backend``)
    name: str
    #: ``model_type`` of the checkpoint's config.json (what ``backend: auto`` reads)
    model_type: str
    #: the released code's quirks that are artefacts of its BLIP code (ALGORITHM.md §10.4, §10.7, §1.2) can
    #: be reproduced (faithful mode); a backend without a released reference runs the clean rules
    has_faithful_reference: bool
    defaults: Defaults
    #: what ``pnp-ovss tiny-model --backend NAME`` writes, in words
    tiny_description: str

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
    def token_maps(self, model, pixel_values: torch.Tensor, tokens, layer: int, head: int, autocast: str = "none") -> torch.Tensor:
        """GradCAM token maps of ``layer``/``head``: float32 [B, L-1, P, P] (row 0 and the image's CLS column
        dropped), the fast way."""

    @abstractmethod
    def one_pass_token_maps(self, model, pixel_values: torch.Tensor, tokens, layers: list[int], autocast: str = "none") -> dict:
        """Every head of every layer in ``layers`` from one forward/backward (backward once from the lowest
        layer): ``{layer: float32 [B, heads, L-1, P, P]}``, ``[layer][:, head]`` equal to :meth:`token_maps`."""

    @abstractmethod
    def reference_token_maps(self, model, pixel_values: torch.Tensor, tokens, layer: int, head: int) -> torch.Tensor:
        """The same maps the straightforward way (full forward and backward, every parameter with a
        gradient): what the fast path is tested against."""

    @abstractmethod
    def write_tiny(self, directory: str | Path, seed: int = 0) -> Path:
        """A tiny randomly initialised checkpoint with its tokenizer (and image processor) files, loadable
        by :meth:`load` like the real one."""

    def unknown_pieces(self, tokenizer, word: str) -> list[str] | None:
        """The pieces of ``word`` when some are the tokenizer's unknown token (None when all are known)."""
        unk = tokenizer.unk_token
        pieces = tokenizer.tokenize(word)
        return pieces if unk is not None and unk in pieces else None

    def check_layer_head(self, model, layer: int, head: int) -> None:
        layers, heads = self.layers_heads(model)
        if not 1 <= layer <= layers:
            raise ValueError(f"layer {layer} out of range: the {self.name} model has cross-attention layers 1..{layers} (1-based)")
        if not 0 <= head < heads:
            raise ValueError(f"head {head} out of range: the {self.name} model has heads 0..{heads - 1} (0-based)")


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
    def revision(self) -> str | None:
        """The Hub commit of the checkpoint (None for a local directory)."""
        return getattr(self.model, "pnp_revision", None)

    def preprocess(self, image: Image.Image, size: int, released_ade: bool = False) -> torch.Tensor:
        return self.backend.preprocess(image, size, released_ade, self.model)

    def gradcam_batch(self, pixel_values: torch.Tensor, class_names: list[list[str]], params: dict):
        from ..gradcam import backend_gradcam_batch

        return backend_gradcam_batch(self.backend, self.model, self.tokenizer, pixel_values, class_names, params)
