"""CLIP for the weak reward (ALGORITHM.md §8): text and image embeddings through transformers' ``CLIPModel``.

``ClipScorer(model_id, device)`` loads a local directory or a Hub id (offline: the same clear error as the
GradCAM model, :class:`pnp_ovss.errors.ModelError`); ``logits(images, prompts)`` are the cosine
similarities × 100 (the released ``/0.01``) of float images [N, S, S, 3] in [0, 1] at the model's input size
with the prompts. ``write_tiny_clip(DIR)`` (``pnp-ovss tiny-model --clip DIR``) writes a tiny random CLIP
with a byte-level character tokenizer and its image processor file, loaded the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..gradcam import CLIP_MEAN, CLIP_STD
from .loading import image_stats, offline_hint, resolve_device


log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"
#: §8: similarities divided by 0.01
LOGIT_SCALE = 100.0


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    def __init__(self, model_id: str = DEFAULT_CLIP, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel


        self.model_id = str(model_id)
        self.device = resolve_device(device)
        try:
            self.model = CLIPModel.from_pretrained(self.model_id)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except (OSError, ValueError) as exc:
            raise offline_hint(self.model_id, exc) from None
        self.model.eval().requires_grad_(False).to(self.device)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.mean, self.std = image_stats(self.model_id)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings [K, D], cached per prompt."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if todo:
            enc = self.tokenizer(todo, padding=True, truncation=True, return_tensors="pt").to(self.device)
            feats = _features(self.model.get_text_features(**enc)).float()
            feats = feats / feats.norm(dim=-1, keepdim=True)
            self._text_cache.update(zip(todo, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    @torch.no_grad()
    def image_features(self, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] of float images [N, S, S, 3] in [0, 1] (S = the model's size)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"images must be [N, {self.image_size}, {self.image_size}, 3], got {images.shape}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=self.device)[None, :, None, None]
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).to(self.device).permute(0, 3, 1, 2)
            feats = _features(self.model.get_image_features(pixel_values=(x - mean) / std)).float()
            out.append(feats / feats.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    def logits(self, images: np.ndarray, prompts: list[str], batch_size: int = 16) -> np.ndarray:
        """Similarities × 100: [N images, K prompts]. All-zero images (§8's negative image, the same for every
        image and setting) go through CLIP once and are then taken from a cache."""
        images = np.asarray(images, dtype=np.float32)
        zero = ~images.reshape(len(images), -1).any(axis=1)
        feats = torch.empty((len(images), self._zero_features().shape[-1]), device=self.device)
        if zero.any():
            feats[torch.from_numpy(zero).to(self.device)] = self._zero_features()
        if (~zero).any():
            feats[torch.from_numpy(~zero).to(self.device)] = self.image_features(images[~zero], batch_size)
        sims = feats @ self.text_features(prompts).T
        return (LOGIT_SCALE * sims).cpu().numpy().astype(np.float64)

    def _zero_features(self) -> torch.Tensor:
        if getattr(self, "_zero", None) is None:
            self._zero = self.image_features(np.zeros((1, self.image_size, self.image_size, 3), np.float32))[0]
        return self._zero


def write_tiny_clip(directory, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` (64 px, patch 16) with a byte-level character BPE tokenizer (no merges)
    and a preprocessor config, saved with ``save_pretrained`` so :class:`ClipScorer` loads it like the Hub's."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer


    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(c, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 64},
                 "crop_size": {"height": 64, "width": 64}, "image_mean": list(CLIP_MEAN),
                 "image_std": list(CLIP_STD), "do_resize": True, "do_center_crop": True, "resample": 3}
    (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    (directory / "README.md").write_text(
        "Tiny randomly initialised CLIP written by `pnp-ovss tiny-model --clip` for offline tests of the search.\n",
        encoding="utf-8",
    )
    return directory
