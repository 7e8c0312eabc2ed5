"""The search's maps (issue #11): per image, the GradCAM class maps of every searched (layer, head) at one
drop iteration (§8: drop_iter 1), from one forward/backward per batch (``Backend.one_pass_token_maps``).

Stored per image like the GradCAM stage (``search/<hash>/images/<key>.zarr``: ``maps`` float32
[layers, heads, K, P, P], attributes with the layers, heads and classes), written whole and renamed into
place, so a killed job resumes at its first unwritten image and every trial of the search reuses them.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..gradcam import class_maps, model_device
from ..ordering import batches_of
from ..stages.job import ShardWork
from ..store import ImageMaps


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


def run_search_maps_job(dataset, image_ids: list[str], params: dict, work: ShardWork, *, on_error: str = "fail",
                        device: str = "auto", batch_size: int = 16, progress: bool = True) -> list[str]:
    """The search maps of the images of a shard job that have none yet; the others are reused. Images are
    read as the GradCAM stage reads them (:func:`pnp_ovss.stages.gradcam.read_batch_inputs`: with
    ``on_error: skip`` an unreadable image gets a skip record). Logs ``computed <id>`` per image through the
    model; writes the job's record; returns the ids computed."""
    from ..entries import write_gradcam_entry
    from ..stages.gradcam import image_labels, load_for_job, read_batch_inputs
    from ..stages.labels import read_label_entries

    log = work.logger(__name__)
    image_ids = list(image_ids)
    todo = work.pending("search", image_ids, on_error)
    computed, skipped = [], []
    size = int(params["image_size"])
    bar = tqdm(total=len(image_ids), initial=len(image_ids) - len(todo), desc=f"search maps {work.shard}",
               unit="img", disable=None if progress else True)  # None: no bar where stderr is not a terminal
    try:
        if todo:
            loaded = load_for_job(params, device, log, f"search maps {work.shard}")
            layers, heads = searched_layers_heads(loaded, params)
            labels = read_label_entries(work.upstream_dir, work.upstream_keys, todo)
            for batch in batches_of(todo, int(batch_size)):
                inputs = read_batch_inputs(dataset, batch, labels, params, loaded, {} if on_error == "skip" else None)
                results = dict(zip(inputs.model_ids, search_maps_batch(loaded, inputs.pixels, inputs.names, params,
                                                                       layers, heads))) if inputs.model_ids else {}
                for image_id in batch:
                    bar.update(1)
                    if image_id in (inputs.skipped or {}):
                        work.skip(image_id, "search", inputs.skipped[image_id])
                        skipped.append(image_id)
                        continue
                    class_ids, class_names = image_labels(labels, image_id)
                    # an image without a class: nothing to score, stored with K = 0
                    maps = results.get(image_id, np.zeros((len(layers), len(heads), 0, inputs.grid, inputs.grid),
                                                          np.float32))
                    attrs = {"image_id": image_id, "layers": layers, "heads": heads, "class_ids": class_ids,
                             "class_names": class_names, "image_size": size, "backend": loaded.backend.name,
                             "params": dict(params)}
                    write_gradcam_entry(work.stage_dir, work.keys[image_id],
                                        ImageMaps(image_id, maps, np.zeros((0, 0), np.int32), attrs), stage="search")
                    computed.append(image_id)
                    log.info("computed %s", image_id)
    finally:
        bar.close()
    work.finish("search", image_ids, computed, skipped, log, "search maps")
    return computed
