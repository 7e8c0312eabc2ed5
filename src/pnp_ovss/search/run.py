"""The search itself (issue #11): every trial scores one (layer, head, threshold) with the CLIP weak reward
(:mod:`pnp_ovss.search.reward`) on the stored one-pass maps (:mod:`pnp_ovss.search.maps`); the sampler is
Optuna's (grid, random or TPE), its study kept in a journal file under ``results/`` so that a killed search
resumes without scoring a finished trial again. Where ground truth exists, each setting also gets the mIoU
of the refine output on the same images (one drop iteration), and the summary the Spearman rank correlation
between reward and mIoU and the mIoU of the reward's choice against the best one.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from ..io import atomic_write_text
from ..layout import BEST_YAML, HEATMAP_PNG, REWARDS_CSV, STUDY_DB, SUMMARY_CSV, THRESHOLD_PNG
from .reward import SettingReward, masked_images, reward_masks

LOG = logging.getLogger(__name__)
DEFAULT_TRIALS = 30


@dataclass
class SearchImage:
    image_id: str
    class_ids: list[int]
    class_names: list[str]
    maps: np.ndarray  # [layers, heads, K, P, P]
    clip_rgb: np.ndarray  # float [S, S, 3] in [0, 1] at the CLIP input size


def load_search_images(dataset, image_ids, keys, maps_dir, clip_size: int) -> tuple[list[SearchImage], list[int], list[int]]:
    """The stored maps of the images (those with at least one class) and the searched layers and heads."""
    from ..entries import entry_path, read_skip
    from ..store import read_image_maps

    images, layers, heads = [], None, None
    for image_id in image_ids:
        path = entry_path(maps_dir, "search", keys[image_id])
        if not path.exists():
            if read_skip(maps_dir, keys[image_id]) is not None:
                continue
            raise FileNotFoundError(f"{path}: no search maps for image {image_id}; run the search_maps jobs first")
        item = read_image_maps(path, image_id)
        layers, heads = list(item.attrs["layers"]), list(item.attrs["heads"])
        if not item.attrs["class_ids"]:
            continue
        rgb = np.asarray(Image.fromarray(dataset.read_image(image_id)).resize((clip_size, clip_size), Image.BICUBIC))
        images.append(SearchImage(image_id, list(item.attrs["class_ids"]), list(item.attrs["class_names"]), item.maps,
                                  rgb.astype(np.float32) / 255.0))
    if layers is None:
        raise ValueError("no image with search maps: nothing to search on")
    return images, layers, heads


def pipeline_masks(dataset, image: SearchImage, maps: np.ndarray, threshold: float, refine: dict, size: int) -> np.ndarray:
    """``search.mask: pipeline``: each class's pixels in the refine output at this setting (one drop
    iteration), resized to the CLIP input (nearest)."""
    labels = refine_labels(dataset, image, maps, threshold, refine)
    small = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))
    return np.stack([small == cid for cid in image.class_ids])


def refine_labels(dataset, image: SearchImage, maps: np.ndarray, threshold: float, refine: dict) -> np.ndarray:
    from ..refine import refine_image

    rgb = dataset.read_crf_image(image.image_id)
    return refine_image(maps[:, None], rgb, image.class_ids, {**refine, "threshold": threshold}, dataset.background_rule)


def score_setting(scorer, images: list[SearchImage], li: int, hi: int, threshold: float, params: dict, dataset=None,
                  batch_size: int = 16) -> SettingReward:
    """The reward of one (layer index, head index, threshold) over the images."""
    from .reward import prompts_for

    total = SettingReward()
    size = scorer.image_size
    for image in images:
        maps = image.maps[li, hi]
        if params["mask"] == "pipeline":
            masks = pipeline_masks(dataset, image, maps, threshold, params["refine"], size)
        else:
            masks = reward_masks(maps, threshold, size)
        logits = scorer.logits(masked_images(image.clip_rgb, masks), prompts_for(image.class_names, params["prompt"]), batch_size)
        total.add_image(image.class_ids, logits, masks, params["contrast"])
    return total


def setting_miou(dataset, protocol, images: list[SearchImage], li: int, hi: int, threshold: float, refine: dict) -> float:
    """mIoU (%) of the refine output at this setting on the images (one drop iteration)."""
    from ..metrics import confusion, summarise

    hist = np.zeros((protocol.n_class, protocol.n_class + 1), dtype=np.int64)
    for image in images:
        pred = refine_labels(dataset, image, image.maps[li, hi], threshold, refine)
        gt = dataset.ground_truth(image.image_id, protocol.name)
        hist += confusion(gt, protocol.pred_to_eval(pred), protocol.n_class)
    _, summary = summarise(hist, protocol.class_names, protocol.averaging)
    return round(100 * summary["mIoU"], 4)


def make_sampler(params: dict, layers, heads):
    import optuna

    if params["strategy"] == "grid":
        space = {"layer": layers, "head": heads, "threshold": list(params["thresholds"])}
        return optuna.samplers.GridSampler(space, seed=int(params["seed"]))
    if params["strategy"] == "random":
        return optuna.samplers.RandomSampler(seed=int(params["seed"]))
    return optuna.samplers.TPESampler(seed=int(params["seed"]))


def open_study(out_dir: Path, params: dict, layers, heads):
    """The study in ``out_dir/study.journal``; trials a killed run left RUNNING are failed and queued again."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # once per job, not once per trial (JournalStorage, enqueue_trial and the samplers are "experimental")
    warnings.filterwarnings("once", category=optuna.exceptions.ExperimentalWarning)
    storage = JournalStorage(JournalFileBackend(str(out_dir / STUDY_DB)))
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize",
                                sampler=make_sampler(params, layers, heads), load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=True)
    return study


def completed_settings(study) -> set[tuple]:
    import optuna

    return {(t.params["layer"], t.params["head"], t.params["threshold"])
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}


def run_search(dataset, image_ids, params: dict, *, keys, maps_dir, out_dir, device: str = "cpu", batch_size: int = 16,
               log: logging.Logger | None = None, protocol=None) -> pd.DataFrame:
    """Score the settings and write rewards.csv, best.yaml, summary.csv and the figures into ``out_dir``."""
    import optuna

    from ..backends.clip import ClipScorer

    log = log or LOG
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scorer = ClipScorer(params["clip_model"], device)
    images, layers, heads = load_search_images(dataset, image_ids, keys, maps_dir, scorer.image_size)
    thresholds = [float(t) for t in params["thresholds"]]
    want_miou = bool(params["miou"]) and protocol is not None
    grid = len(layers) * len(heads) * len(thresholds)
    target = grid if params["strategy"] == "grid" else min(grid, int(params["trials"] or DEFAULT_TRIALS))
    study = open_study(out_dir, params, layers, heads)
    done = completed_settings(study)
    log.info("search: %d images, %d layers x %d heads x %d thresholds = %d settings; %d scored before, %d to score",
             len(images), len(layers), len(heads), len(thresholds), grid, len(done), max(target - len(done), 0))

    def objective(trial):
        layer = trial.suggest_categorical("layer", layers)
        head = trial.suggest_categorical("head", heads)
        threshold = trial.suggest_categorical("threshold", thresholds)
        if (layer, head, threshold) in completed_settings(study):
            raise optuna.TrialPruned("this setting is scored already")  # random/TPE may propose it again
        li, hi = layers.index(layer), heads.index(head)
        reward = score_setting(scorer, images, li, hi, threshold, params, dataset, batch_size)
        trial.set_user_attr("per_class", {str(k): v for k, v in reward.per_class().items()})
        trial.set_user_attr("images", reward.images)
        if want_miou:
            trial.set_user_attr("mIoU", setting_miou(dataset, protocol, images, li, hi, threshold, params["refine"]))
        log.info("scored layer %d head %d threshold %g: reward %g", layer, head, threshold, reward.total)
        scored.append((layer, head, threshold))
        return reward.total

    from tqdm import tqdm

    from .._faults import after_image

    scored: list[tuple] = []
    remaining = max(target - len(done), 0)
    with tqdm(total=target, initial=target - remaining, desc="search", unit="setting", disable=None) as bar:
        while len(completed_settings(study)) < target and len(study.trials) < 4 * grid + target:
            before = len(completed_settings(study))
            study.optimize(objective, n_trials=1)
            bar.update(len(completed_settings(study)) - before)
            after_image("search", len(scored))  # test-only fault injection, after a trial is stored
    table = rewards_table(study)
    write_outputs(table, params, out_dir, dataset, want_miou, layers, heads)
    return table


def rewards_table(study) -> pd.DataFrame:
    import optuna

    rows = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        key = (t.params["layer"], t.params["head"], t.params["threshold"])
        rows[key] = {
            "layer": t.params["layer"], "head": t.params["head"], "threshold": t.params["threshold"],
            "reward": t.value, "images": t.user_attrs.get("images"),
            "per_class_reward": json.dumps(t.user_attrs.get("per_class", {}), sort_keys=True),
            **({"mIoU": t.user_attrs["mIoU"]} if "mIoU" in t.user_attrs else {}),
        }
    return pd.DataFrame(sorted(rows.values(), key=lambda r: (r["layer"], r["head"], r["threshold"])))


def best_row(table: pd.DataFrame) -> pd.Series:
    """The highest reward; ties go to the first in (layer, head, threshold) order."""
    return table.loc[table["reward"].idxmax()]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def write_outputs(table: pd.DataFrame, params: dict, out_dir: Path, dataset, want_miou: bool, layers, heads) -> None:
    best = best_row(table)
    atomic_write_text(out_dir / REWARDS_CSV, table.to_csv(index=False))
    summary = {"settings": len(table), "best_layer": int(best["layer"]), "best_head": int(best["head"]),
               "best_threshold": float(best["threshold"]), "best_reward": float(best["reward"]), "images": int(best["images"])}
    if want_miou and "mIoU" in table:
        summary.update({
            "spearman_reward_miou": spearman(table["reward"], table["mIoU"]),
            "miou_of_reward_choice": float(best["mIoU"]),
            "best_miou": float(table["mIoU"].max()),
        })
    atomic_write_text(out_dir / SUMMARY_CSV, pd.DataFrame([summary]).to_csv(index=False))
    # the searched backend and model travel with the setting: `--configfile best.yaml` runs what was searched
    searched = {"backend": params.get("backend", "blip"), **({"model": params["model"]} if params.get("model") else {})}
    best_config = {
        "gradcam": {**searched, "layer": int(best["layer"]), "head": int(best["head"])},
        "refine": {"threshold": float(best["threshold"])},
    }
    header = (f"# chosen by `snakemake search` (CLIP weak reward {best['reward']:g} on {int(best['images'])} images, "
              f"{len(table)} settings); run the pipeline with it: snakemake --cores all --configfile <this file> ...\n")
    atomic_write_text(out_dir / BEST_YAML, header + yaml.safe_dump(best_config, sort_keys=False))
    write_figures(table, out_dir, layers, heads, float(best["threshold"]))


def write_figures(table: pd.DataFrame, out_dir: Path, layers, heads, best_threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = table[table["threshold"] == best_threshold]
    grid = np.full((len(layers), len(heads)), np.nan)
    for _, r in at.iterrows():
        grid[layers.index(int(r["layer"])), heads.index(int(r["head"]))] = r["reward"]
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(heads), 1 + 0.4 * len(layers)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(heads)), heads)
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"CLIP weak reward at threshold {best_threshold:g}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    _save(fig, out_dir / HEATMAP_PNG)
    fig, ax = plt.subplots(figsize=(6, 4))
    by_threshold = table.groupby("threshold")["reward"]
    ax.plot(by_threshold.max().index, by_threshold.max().values, marker="o", label="best (layer, head)")
    ax.plot(by_threshold.mean().index, by_threshold.mean().values, marker=".", label="mean over (layer, head)")
    ax.set_xlabel("threshold")
    ax.set_ylabel("reward")
    ax.legend()
    fig.tight_layout()
    _save(fig, out_dir / THRESHOLD_PNG)


def _save(fig, path: Path) -> None:
    import io

    from ..io import atomic_write_bytes
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
