"""GradCAM on BLIP ITM cross-attention with Salience Drop (ALGORITHM.md §3–§5, issue #3).

Pipeline for one batch of images (each with its own ordered class list, one caption per image):

1. :func:`preprocess_image` — §3 (bicubic squash to S×S + CLIP mean/std; released ADE20K: bilinear, [0, 1]).
2. :func:`tokenize_captions` — ``"A picture of " + names``, padded to the batch's longest, [CLS] → [ENC].
3. :func:`salience_drop` — §5: for d = 0..D-1 zero the dropped 16×16 pixel blocks, compute the GradCAM
   token maps G_d (§4.4) of text layer L / head H, zero the dropped cells (G'_d), group token rows to
   classes (§4.5) and choose the next ``drop_patches`` patches.

The token maps come from :func:`fast_token_maps` (ViT without gradient, backward only through text layers
≥ L, only layer L / head H formed). ``tests/support/gradcam_reference.py`` holds the straightforward path
(full forward + backward, captions padded to 500, every layer's maps) that tests compare against.

The aggregation ``2·G'_0 + G'_1 + ...`` is not done here: the store keeps every G'_d (refine aggregates).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image


log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: "a picture of" — the token rows before the class pieces (after dropping [ENC])
PREFIX_ROWS = 3


# --------------------------------------------------------------------------------------------------
# §3 preprocessing


def uses_released_ade_input(unnormalised_input: bool, params: dict) -> bool:
    """True when the image goes in as the released ADE20K code feeds it (bilinear, no mean/std): the dataset
    says so (``Dataset.unnormalised_input``) and the ``normalize_ade`` fix is off (§10.1)."""
    return bool(unnormalised_input) and not bool(params.get("normalize_ade", False))


def preprocess_image(
    image: Image.Image, size: int, released_ade: bool = False, mean=CLIP_MEAN, std=CLIP_STD
) -> torch.Tensor:
    """PIL image → float32 [3, S, S].

    Default: PIL ``resize((S, S), BICUBIC)`` (aspect ratio not kept; what torchvision's ``Resize`` does on a
    PIL image) → [0, 1] → ``mean``/``std`` (CLIP's). ``released_ade``: ``resize((S, S), BILINEAR)`` → [0, 1]
    only.
    """
    rgb = image.convert("RGB")
    resample = Image.BILINEAR if released_ade else Image.BICUBIC
    arr = np.asarray(rgb.resize((size, size), resample), dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)
    if released_ade:
        return x.contiguous()
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return x.sub(m).div(s).contiguous()


# --------------------------------------------------------------------------------------------------
# captions


@dataclass
class CaptionTokens:
    """Tokenised captions of a batch. ``input_ids[:, 0]`` is [ENC]; rows after [ENC] are
    ``a picture of <class pieces> [SEP] [PAD]...``."""

    input_ids: torch.Tensor  # int64 [B, L]
    attention_mask: torch.Tensor  # int64 [B, L]
    piece_counts: list[list[int]]  # word pieces of each class, per image
    captions: list[str]
    prefix_rows: int = PREFIX_ROWS  # rows after row 0 before the first class piece ("a picture of")

    @property
    def longest(self) -> int:
        """The batch's longest real caption length (what the released padding="longest" gives)."""
        return int(self.attention_mask.sum(1).max())

    def to(self, device) -> "CaptionTokens":
        return CaptionTokens(
            self.input_ids.to(device), self.attention_mask.to(device), self.piece_counts, self.captions, self.prefix_rows
        )


# --------------------------------------------------------------------------------------------------
# §4.4 GradCAM


def gradcam_map(attn: torch.Tensor, grad: torch.Tensor, text_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """G = A · ReLU(∂J/∂A) · m with the ViT CLS column and the [ENC] row dropped (§4.4).

    ``attn``/``grad``: [B, L, 1+P²] (one head) or [B, heads, L, 1+P²]; ``text_mask``: [B, L].
    Returns float32 [..., L-1, P, P] (patch k = i·P + j, row-major).
    """
    m = text_mask.to(torch.float32)
    m = m[:, :, None] if attn.dim() == 3 else m[:, None, :, None]
    g = attn[..., 1:].float() * grad[..., 1:].float().clamp(min=0) * m
    g = g[..., 1:, :]
    return g.reshape(*g.shape[:-1], grid, grid)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def autocast_context(device: torch.device, autocast: str | None):
    """bf16/fp16 autocast on CUDA when asked; ``none`` (or CPU) runs in fp32."""
    if not autocast or autocast == "none":
        return contextlib.nullcontext()
    if device.type != "cuda":
        _warn_once(f"autocast {autocast} requested on {device}: ignored, running fp32")
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast]
    return torch.autocast(device_type="cuda", dtype=dtype)


# --------------------------------------------------------------------------------------------------
# §4.5 token → class, §5 Salience Drop


def class_maps(
    token_maps: np.ndarray, piece_counts: list[int], mean_last_class: bool, prefix_rows: int = PREFIX_ROWS
) -> np.ndarray:
    """Group the token rows of one image (rows after [ENC]: a, picture, of, class pieces...) into [K, P, P].

    Each class is the mean of its word pieces, except — as released — the last class, whose pieces are
    summed when it has several (§4.5, §10.7); ``mean_last_class`` averages it too.
    """
    out = np.empty((len(piece_counts),) + token_maps.shape[1:], dtype=np.float32)
    row = prefix_rows
    for k, n in enumerate(piece_counts):
        pieces = token_maps[row : row + n]
        last = k == len(piece_counts) - 1
        out[k] = pieces.sum(0) if (last and not mean_last_class) else pieces.sum(0) / n
        row += n
    return out


def ranking_scores(
    token_maps: np.ndarray, piece_counts: list[list[int]], exclude_sep_rows: bool, prefix_rows: int = PREFIX_ROWS
) -> np.ndarray:
    """Per image, the patch scores that choose the next patches to drop: [B, P²].

    Released (§5): the sum of rows 3 .. L-3 (``[3:-1]``, L = the batch's longest caption), which for a
    shorter caption includes its [SEP] row — so the ranking depends on the batch. ``exclude_sep_rows``:
    only the image's own class-piece rows (batch independent).
    """
    b = token_maps.shape[0]
    if exclude_sep_rows:
        rows = [token_maps[i, prefix_rows : prefix_rows + sum(c)].sum(0) for i, c in enumerate(piece_counts)]
        scores = np.stack(rows)
    else:
        scores = token_maps[:, prefix_rows:-1].sum(1)
    return scores.reshape(b, -1).astype(np.float32, copy=False)


def top_patches(scores: np.ndarray, already_dropped: list[int], k: int) -> np.ndarray:
    """The released choice: scores of already-dropped cells set to 0, then the last ``k`` of numpy's
    ascending ``argsort`` (zero cells, possibly already dropped, fill up when fewer than k are positive)."""
    s = np.array(scores, dtype=np.float32, copy=True)
    if already_dropped:
        s[np.asarray(already_dropped, dtype=np.int64)] = 0
    return np.argsort(s)[-k:].astype(np.int32)


def dropped_cell_mask(dropped: list[list[int]], grid: int) -> np.ndarray:
    """bool [B, P, P]: True at the cells dropped so far."""
    mask = np.zeros((len(dropped), grid * grid), dtype=bool)
    for b, cells in enumerate(dropped):
        if cells:
            mask[b, np.asarray(cells, dtype=np.int64)] = True
    return mask.reshape(len(dropped), grid, grid)


def zero_patch_pixels(pixel_values: torch.Tensor, cells: np.ndarray, patch: int) -> torch.Tensor:
    """A copy of the batch with the 16×16 pixel block of every dropped cell set to 0 in all channels."""
    if not cells.any():
        return pixel_values.clone()
    pix = torch.from_numpy(cells).to(pixel_values.device)
    pix = pix.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)  # [B, S, S]
    return pixel_values.masked_fill(pix[:, None, :, :], 0.0)


def zero_dropped_cells(token_maps: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """G'_d: every token row zeroed at the dropped cells. ``token_maps`` [B, R, P, P], ``cells`` [B, P, P]."""
    return np.where(cells[:, None, :, :], np.float32(0), token_maps)


@dataclass
class ImageGradcam:
    """The result for one image: ``maps`` float32 [K, D, P, P] (G'_d per class), ``dropped`` int32
    [D, drop_patches] (patches chosen at iteration d, zeroed from d+1 on) and its caption."""

    maps: np.ndarray
    dropped: np.ndarray
    caption: str


TokenMapsFn = Callable[[torch.Tensor], np.ndarray]


def salience_drop(
    token_maps_fn: TokenMapsFn,
    pixel_values: torch.Tensor,
    piece_counts: list[list[int]],
    captions: list[str],
    params: dict,
    patch_size: int,
    prefix_rows: int = PREFIX_ROWS,
) -> list[ImageGradcam]:
    """Run the §5 loop. ``token_maps_fn(x)`` returns the GradCAM token maps [B, L-1, P, P] (numpy float32,
    L = the batch's longest caption) of the pixel batch ``x``; the class pieces start at row ``prefix_rows``."""
    drop_iter = int(params["drop_iter"])
    k = int(params["drop_patches"])
    exclude_sep = bool(params.get("exclude_sep_rows", False))
    mean_last = bool(params.get("mean_last_class", False))
    b = pixel_values.shape[0]
    grid = pixel_values.shape[-1] // patch_size
    if drop_iter < 1:
        raise ValueError("drop_iter must be >= 1")
    if not 1 <= k <= grid * grid:
        raise ValueError(f"drop_patches must be in 1..{grid * grid} for a {grid}x{grid} grid")
    maps = [np.zeros((len(c), drop_iter, grid, grid), dtype=np.float32) for c in piece_counts]
    chosen = np.zeros((b, drop_iter, k), dtype=np.int32)
    dropped: list[list[int]] = [[] for _ in range(b)]
    for d in range(drop_iter):
        cells = dropped_cell_mask(dropped, grid)
        token_maps = token_maps_fn(zero_patch_pixels(pixel_values, cells, patch_size))
        kept = zero_dropped_cells(token_maps, cells)
        for i in range(b):
            maps[i][:, d] = class_maps(kept[i], piece_counts[i], mean_last, prefix_rows)
        scores = ranking_scores(token_maps, piece_counts, exclude_sep, prefix_rows)
        for i in range(b):
            new = top_patches(scores[i], dropped[i], k)
            chosen[i, d] = new
            dropped[i].extend(int(p) for p in new)
    return [ImageGradcam(maps[i], chosen[i], captions[i]) for i in range(b)]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def drop_with(
    token_maps, model, pixel_values: torch.Tensor, tokens: "CaptionTokens", params: dict, patch_size: int | None = None
) -> list[ImageGradcam]:
    """Salience Drop over a batch, with ``token_maps(x) -> [B, L-1, P, P]`` computing one pass's maps
    (``patch_size``: the model's, read from its vision config when not given)."""
    return salience_drop(
        token_maps,
        pixel_values.to(device=model_device(model), dtype=torch.float32),
        tokens.piece_counts,
        tokens.captions,
        params,
        int(patch_size or model.config.vision_config.patch_size),
        tokens.prefix_rows,
    )


def backend_gradcam_batch(backend, model, tokenizer, pixel_values: torch.Tensor, class_names: list[list[str]], params: dict) -> list[ImageGradcam]:
    """GradCAM + Salience Drop for a batch with any backend (:mod:`pnp_ovss.backends`), the fast path.

    ``pixel_values`` [B, 3, S, S] from the backend's ``preprocess``; ``class_names[b]`` the ordered class
    names of image b (K ≥ 1; its caption is ``"A picture of " + names``); ``params``: ``layer`` (1-based),
    ``head``, ``drop_iter``, ``drop_patches``, ``exclude_sep_rows``, ``mean_last_class``, ``keep_spaces``,
    ``autocast``.
    """
    device = model_device(model)
    tokens = backend.tokenize(tokenizer, class_names, keep_spaces=bool(params.get("keep_spaces", False))).to(device)
    layer, head = int(params["layer"]), int(params["head"])
    backend.check_layer_head(model, layer, head)
    autocast = params.get("autocast", "none")

    def token_maps(x: torch.Tensor) -> np.ndarray:
        return backend.token_maps(model, x, tokens, layer, head, autocast).cpu().numpy()

    return drop_with(token_maps, model, pixel_values, tokens, params, backend.patch_size(model))


