"""The search's maps (issue #11): per image, the GradCAM class maps of every searched (layer, head) at one
drop iteration (§8: drop_iter 1), from one forward/backward per batch (``Backend.one_pass_token_maps``).

Stored per image like the GradCAM stage (``search/<hash>/images/<key>.zarr``: ``maps`` float32
[layers, heads, K, P, P], attributes with the layers, heads and classes), written whole and renamed into
place, so a killed job resumes at its first unwritten image and every trial of the search reuses them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from ..gradcam import class_maps, model_device, uses_released_ade_input
from PIL import Image
from ..ordering import batches_of
from ..store import ImageMaps

LOG = logging.getLogger(__name__)


def searched_layers_heads(loaded, params: dict) -> tuple[list[int], list[int]]:
    """The searched layers and heads: the configured lists, or (null) every one of the model's."""
    n_layers, n_heads = loaded.backend.layers_heads(loaded.model)
    layers = sorted(set(params.get("layers") or range(1, n_layers + 1)))
    heads = sorted(set(params.get("heads") or range(n_heads)))
    for layer in layers:
        loaded.backend.check_layer_head(loaded.model, layer, 0)
    for head in heads:
        loaded.backend.check_layer_head(loaded.model, layers[0], head)
    return layers, heads


def search_maps_batch(loaded, pixel_values: torch.Tensor, class_names: list[list[str]], params: dict,
                      layers: list[int], heads: list[int]) -> list[np.ndarray]:
    """Per image, float32 [len(layers), len(heads), K, P, P]: the token rows grouped into classes (§4.5, the
    configured ``mean_last_class``) for every (layer, head), from one forward/backward."""
    backend, model = loaded.backend, loaded.model
    device = model_device(model)
    tokens = backend.tokenize(loaded.tokenizer, class_names, keep_spaces=bool(params.get("keep_spaces", False))).to(device)
    x = pixel_values.to(device=device, dtype=torch.float32)
    maps = backend.one_pass_token_maps(model, x, tokens, layers, params.get("autocast", "none"))
    mean_last = bool(params.get("mean_last_class", False))
    out = []
    for b, counts in enumerate(tokens.piece_counts):
        grid = maps[layers[0]].shape[-1]
        arr = np.zeros((len(layers), len(heads), len(counts), grid, grid), np.float32)
        for li, layer in enumerate(layers):
            rows = maps[layer][b].cpu().numpy()  # [heads, L-1, P, P]
            for hi, head in enumerate(heads):
                arr[li, hi] = class_maps(rows[head], counts, mean_last, tokens.prefix_rows)
        out.append(arr)
    return out


def run_search_maps_job(
    dataset,
    image_ids: list[str],
    params: dict,
    *,
    keys: dict[str, str],
    stage_dir: str | os.PathLike,
    record: str | os.PathLike,
    upstream_keys: dict[str, str],
    upstream_dir: str | os.PathLike,
    shard: str = "",
    log: logging.Logger | None = None,
    on_error: str = "fail",
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """The search maps of the images of a shard job that have none yet; the others are reused. Logs
    ``computed <id>`` per image through the model; writes the job's record; returns the ids computed."""
    from ..cache import is_done, listing, write_gradcam_entry, write_job_record, write_skip
    from ..stages.gradcam import image_labels, model_for
    from ..stages.labels import read_label_entries

    log = log or LOG
    image_ids = list(image_ids)
    names = listing(stage_dir)
    todo = [i for i in image_ids if not is_done(names, "search", keys[i], on_error)]
    computed, skipped = [], []
    size = int(params["image_size"])
    released_ade = uses_released_ade_input(getattr(dataset, "unnormalised_input", False), params)
    bar = tqdm(total=len(image_ids), initial=len(image_ids) - len(todo), desc=f"search maps {shard}", unit="img",
               disable=None if progress else True)  # None: no bar where stderr is not a terminal
    try:
        if todo:
            loaded = model_for(params, device)
            layers, heads = searched_layers_heads(loaded, params)
            labels = read_label_entries(upstream_dir, upstream_keys, todo)
            for batch in batches_of(todo, int(batch_size)):
                ids, pixels, names_ = [], [], []
                for image_id in batch:
                    class_ids, class_names = image_labels(labels, image_id)
                    if not class_names:
                        continue  # no class: nothing to score, stored below with K = 0
                    try:
                        image = Image.fromarray(dataset.read_image(image_id))
                    except Exception as exc:  # noqa: BLE001 - reported per image
                        if on_error != "skip":
                            raise
                        write_skip(stage_dir, keys[image_id], image_id, "search", str(exc))
                        skipped.append(image_id)
                        continue
                    ids.append(image_id)
                    pixels.append(loaded.preprocess(image, size, released_ade))
                    names_.append(class_names)
                results = dict(zip(ids, search_maps_batch(loaded, torch.stack(pixels), names_, params, layers, heads))) if ids else {}
                grid = size // loaded.patch_size
                for image_id in batch:
                    if image_id in skipped:
                        bar.update(1)
                        continue
                    class_ids, class_names = image_labels(labels, image_id)
                    maps = results.get(image_id, np.zeros((len(layers), len(heads), 0, grid, grid), np.float32))
                    attrs = {"image_id": image_id, "layers": layers, "heads": heads, "class_ids": class_ids,
                             "class_names": class_names, "image_size": size, "backend": loaded.backend.name,
                             "params": dict(params)}
                    write_gradcam_entry(stage_dir, keys[image_id], ImageMaps(image_id, maps, np.zeros((0, 0), np.int32), attrs), stage="search")
                    computed.append(image_id)
                    log.info("computed %s", image_id)
                    bar.update(1)
    finally:
        bar.close()
    log.info("search maps %s: %d images computed, %d reused, %d skipped", shard, len(computed),
             len(image_ids) - len(computed) - len(skipped), len(skipped))
    write_job_record(record, "search", shard, image_ids, computed, skipped)
    return computed
