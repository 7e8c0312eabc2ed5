"""What a running rule script needs, apart from the plan: its logger, torch's threads, the stage folder's
``params.yaml``, and :class:`JobContext`, which gives a script all of it from Snakemake's ``snakemake``
object in one line (the rule scripts in ``workflow/scripts/`` are a few lines each)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from ..io import atomic_write_text


@dataclass
class JobContext:
    """One rule job: ``JobContext.from_snakemake(snakemake, "refine")``.

    The rules pass the same names (rules/*.smk): ``params.stage`` (the stage parameters), ``params.ids``
    (the job's images), ``params.work`` (``keys``, ``upstream`` keys, ``shard``), ``params.upstream_dir``;
    a shard job's output is its record, ``<stage folder>/<hash>/jobs/<job>.json``.
    """

    snakemake: object
    name: str
    log: logging.Logger

    @classmethod
    def from_snakemake(cls, snakemake, name: str, *, model: bool = False) -> JobContext:
        """The job's logger (the rule's log file) and, for a model job (``model``: gradcam, search), torch's
        thread count (:func:`set_model_job_threads`)."""
        log = stage_logger(snakemake.log[0], name)
        if model:
            set_model_job_threads(snakemake.config["gradcam"], snakemake.threads, log)
        return cls(snakemake, name, log)

    @property
    def config(self) -> dict:
        return self.snakemake.config

    @property
    def params(self):
        return self.snakemake.params

    @cached_property
    def dataset(self):
        from ..datasets import get_dataset

        return get_dataset(self.config)

    @cached_property
    def protocol(self):
        from ..protocols import get_protocol

        ds = self.dataset
        return get_protocol(ds.name, self.config["protocol"], ds.vocabulary, self.config["mmseg_variant"])

    @property
    def output(self) -> Path:
        """The job's first output (a shard job's record)."""
        return Path(self.snakemake.output[0])

    @property
    def stage_dir(self) -> Path:
        """``<stage folder>/<hash>/`` of a shard job (its record is ``jobs/<job>.json`` there)."""
        return self.output.parent.parent

    def write_params(self, folder: str | os.PathLike | None = None, params: dict | None = None) -> None:
        """``params.yaml`` of the stage folder (default: the rule's ``params.stage`` in :attr:`stage_dir`)."""
        write_params_yaml(self.stage_dir if folder is None else folder,
                          self.params.stage if params is None else params)

    def shard_job(self) -> tuple[list[str], dict, ShardWork]:
        """``(image ids, stage parameters, work)`` of a ``run_<stage>_job`` call (:class:`ShardWork`: keys,
        stage folder, record, upstream keys and folder, shard, logger); ``params.yaml`` written first."""
        work = self.params.work
        self.write_params()
        upstream = work["upstream"] is not None
        return list(self.params.ids), self.params.stage, ShardWork(
            work["keys"], self.stage_dir, self.output, work["upstream"], self.params.upstream_dir if upstream else None,
            work["shard"], self.log)


@dataclass
class ShardWork:
    """What a shard job of a stage works on and where (the ``work`` of every ``run_<stage>_job``): its
    images' keys, the stage folder (entries in ``images/``), the job's record, the upstream stage's keys
    and folder (none for labels), the shard's name and the logger. The rule scripts get it from
    :meth:`JobContext.shard_job`, ``pnp-ovss segment`` from the plan's jobs, tests build it."""

    keys: dict[str, str]
    stage_dir: Path
    record: Path
    upstream_keys: dict[str, str] | None = None
    upstream_dir: Path | None = None
    shard: str = ""
    log: logging.Logger | None = None

    def __post_init__(self):
        self.stage_dir, self.record = Path(self.stage_dir), Path(self.record)
        if self.upstream_dir is not None:
            self.upstream_dir = Path(self.upstream_dir)

    def logger(self, default: str) -> logging.Logger:
        return self.log or logging.getLogger(default)

    def entry(self, stage: str, image_id: str) -> Path:
        """An image's entry in the stage folder (``images/<key><suffix>``)."""
        from ..entries import entry_path

        return entry_path(self.stage_dir, stage, self.keys[image_id])

    def upstream_entry(self, stage: str, image_id: str) -> Path:
        """An image's entry in the upstream stage folder."""
        from ..entries import entry_path

        return entry_path(self.upstream_dir, stage, self.upstream_keys[image_id])

    def pending(self, stage: str, image_ids: list[str], on_error: str, upstream_stage: str | None = None,
                log: logging.Logger | None = None) -> list[str]:
        """The images without a result (or, with ``on_error: skip``, a skip record); with ``upstream_stage``
        also those whose result was made from another version of their upstream entry, which are set aside
        (:func:`pnp_ovss.entries.outdated`)."""
        from ..entries import is_done, listing, outdated

        names = listing(self.stage_dir)
        return [i for i in image_ids if not is_done(names, stage, self.keys[i], on_error)
                or (upstream_stage is not None and outdated(stage, self.entry(stage, i), upstream_stage,
                                                            self.upstream_entry(upstream_stage, i), log))]

    def skip(self, image_id: str, stage: str, reason: str) -> None:
        """The skip record of an image (``<key>.skipped.json``: the stage that skipped it and why)."""
        from ..entries import write_skip

        write_skip(self.stage_dir, self.keys[image_id], image_id, stage, reason)

    def finish(self, stage: str, image_ids: list[str], computed: list[str], skipped: list[str] | None,
               log: logging.Logger, what: str | None = None) -> None:
        """Log the job's counts (computed, reused and, unless ``skipped`` is None, skipped; ``what``: how the
        line names the stage) and write its record."""
        from ..entries import write_job_record

        what, reused = what or stage, len(image_ids) - len(computed) - len(skipped or [])
        if skipped is None:
            log.info("%s %s: %d images computed, %d reused", what, self.shard, len(computed), reused)
        else:
            log.info("%s %s: %d images computed, %d reused, %d skipped", what, self.shard, len(computed), reused,
                     len(skipped))
        write_job_record(self.record, stage, self.shard, image_ids, computed, skipped or [])


_IMPORTED_AT = __import__("time").perf_counter()


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc, so the interpreter's start and every import
    count; elsewhere since this module was imported): a model job's set-up, logged apart from its model time."""
    import time

    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED_AT


def stage_logger(log_path: str | None, name: str) -> logging.Logger:
    """A logger whose records (and those of every pnp_ovss module) go to the rule's log file."""
    pkg = logging.getLogger("pnp_ovss")
    pkg.setLevel(logging.INFO)
    quiet_progress_bars()
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg.addHandler(fh)  # the stage's logger and every package module's propagate here
        _log_uncaught_errors(logging.getLogger(f"pnp_ovss.{name}"))
    return logging.getLogger(f"pnp_ovss.{name}")


def quiet_progress_bars() -> None:
    """No progress bars where stderr is not a terminal (a SLURM job's output file, a CI log): one line per
    event. Our own bars pass ``disable=None`` (tqdm then checks the terminal); Hugging Face's are turned off
    here, for what is loaded later in the job and for its subprocesses."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def _log_uncaught_errors(logger: logging.Logger) -> None:
    """Write the error that ends a rule script into its log file too (it also reaches Snakemake's stderr)."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        logger.error("%s: %s", kind.__name__, value)
        previous(kind, value, tb)

    sys.excepthook = hook


def set_model_job_threads(gradcam_cfg: dict, job_threads: int, log: logging.Logger | None = None) -> int | None:
    """In a model job (gradcam, search): torch's thread count from the rule's threads on a GPU or when
    ``gradcam.threads`` is set (see :func:`pnp_ovss.config.torch_threads_for_job`); returns what was set."""
    import torch

    from ..config import torch_threads_for_job

    n = torch_threads_for_job(gradcam_cfg, job_threads, torch.cuda.is_available())
    if n is not None:
        torch.set_num_threads(n)
        if log is not None:
            log.info("torch threads: %d (the job's threads)", n)
    return n


def write_params_yaml(folder: str | Path, params: dict) -> None:
    """The human-readable parameters of a stage folder (``<stage>/<hash>/params.yaml``)."""
    path = Path(folder) / "params.yaml"
    text = yaml.safe_dump(params, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
