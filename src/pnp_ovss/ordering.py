"""Image order and shards (docs/ARCHITECTURE.md; ALGORITHM.md §9: the released code's order)."""

from __future__ import annotations

import numpy as np


def torch_randperm(n: int, seed: int) -> list[int]:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()`` without torch, so the
    parse never imports it: torch's CPU randperm is a Fisher-Yates walk, ``z = random() % (n - i)``, over the
    32-bit outputs of an MT19937 seeded like numpy's legacy ``RandomState(seed)`` (for ``n`` below 2³²/20;
    ``tests`` compare the two)."""
    if n >= (1 << 32) // 20:
        raise ValueError(f"{n} images: more than this order reproduces")
    raw = np.random.RandomState(seed)._bit_generator.random_raw(max(n - 1, 0)).tolist()
    perm = list(range(n))
    for i, r in enumerate(raw):
        z = i + r % (n - i)
        perm[i], perm[z] = perm[z], perm[i]
    return perm


def faithful_order(ids: list[str], seed: int = 0) -> list[str]:
    """The released code's order: ``DistributedSampler`` defaults (shuffle, seed 0, world size 1),
    i.e. ``ids[torch.randperm(N, generator seeded seed)]``."""
    return [ids[i] for i in torch_randperm(len(ids), seed)]


def make_shards(ids: list[str], shard_size: int) -> list[list[str]]:
    """Consecutive runs of ``shard_size`` ids (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]


def batches_of(ids: list[str], size: int) -> list[list[str]]:
    """Consecutive runs of ``size`` images in the given order (the released DataLoader batches)."""
    if size < 1:
        raise ValueError("batch_size must be >= 1")
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def shard_name(index: int) -> str:
    return f"shard-{index:04d}"


def group_shards(names: list[str], shard_images: int, job_images: int) -> list[list[str]]:
    """Consecutive shards joined into jobs of about ``job_images`` images (the model stages' jobs): whole
    shards only, as few jobs as that size allows, the shards spread evenly over them (so the last job is not
    a small remainder)."""
    if shard_images < 1 or job_images < 1:
        raise ValueError("shard and job sizes must be >= 1")
    if not names:
        return []
    n_jobs = -(-len(names) // -(-job_images // shard_images))
    base, extra = divmod(len(names), n_jobs)
    groups, start = [], 0
    for j in range(n_jobs):
        end = start + base + (1 if j < extra else 0)
        groups.append(names[start:end])
        start = end
    return groups
