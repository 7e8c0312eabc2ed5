"""The field's table (``snakemake table``, docs/table.md): every configured row run on every benchmark found, one
column per benchmark variant of the eight the training-free papers report, beside quoted published rows.

A row is a config overlay (``table.rows``); a *cell* is one row on one benchmark variant, i.e. one ordinary
single-dataset run of the workflow with that overlay. The cells run as ordinary runs, in the same results folder,
so every per-image result already there (from a plain ``--config dataset=voc`` run, or an earlier table) is
reused and only what is missing is computed. What a cell's run wrote is found again from its own plan (the
evaluation folder its keys name), never from a view that a later run may have replaced.

Quoted rows come from ``data/reference_rows.yaml``: each names its source, is marked ``quoted`` and is never
mixed with measured rows (its average is its own values', over the same columns).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from ..config import deep_merge, normalise, plan_runs, resolved_label_source
from ..descriptors import BENCHMARKS, DESCRIPTORS
from ..errors import ConfigError, DatasetError
from ..forwarding import cell_command, jobs_run
from ..io import atomic_write_bytes, atomic_write_text
from ..layout import MIOU_CSV

#: the eight columns, in the order of the peers' tables: (column, dataset, mmseg variant)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("VOC21", "voc", "voc21"),
    ("PC60", "psc", "pc60"),
    ("Object", "coco_object", "coco_object81"),
    ("VOC20", "voc", "voc20"),
    ("PC59", "psc", "pc59"),
    ("Stuff", "coco_stuff", "coco_stuff171"),
    ("City", "cityscapes", "city19"),
    ("ADE", "ade20k", "ade150"),
)
COLUMN_NAMES = tuple(c for c, _, _ in COLUMNS)
#: where a ``pnp``-protocol result goes: the column of the class set the released scoring uses (background
#: counted: VOC 21, Context 60; COCO-Object with background; Cityscapes and ADE20K with void/other as class 0)
PNP_COLUMN = {"voc": "VOC21", "psc": "PC60", "coco_object": "Object", "coco_stuff": "Stuff", "cityscapes": "City",
              "ade20k": "ADE"}

TABLE_CSV, TABLE_MD, TABLE_PNG = "table.csv", "table.md", "table.png"
CELLS_CSV = "table-cells.csv"
REFERENCE_REF = resources.files("pnp_ovss") / "data" / "reference_rows.yaml"


@dataclass(frozen=True)
class Cell:
    """One row on one benchmark variant: an ordinary single-dataset run with this (normalised) config."""

    row: str
    dataset: str
    column: str
    variant: str | None  # the mmseg variant, None under the pnp protocol
    config: dict = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.row} · {self.dataset}" + (f" ({self.variant})" if self.variant else "")

    @property
    def slug(self) -> str:
        return "-".join(_slug(p) for p in (self.row, self.dataset, self.variant or "pnp"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "row"


def column_of(dataset: str, protocol: str, variant: str | None) -> str:
    if protocol == "pnp":
        return PNP_COLUMN[dataset]
    for column, name, v in COLUMNS:
        if name == dataset and v == variant:
            return column
    raise ConfigError(f"no table column for {dataset} under mmseg variant {variant!r}")


# --- which benchmarks, which cells ------------------------------------------------------------------------


def found_benchmarks(cfg: dict) -> tuple[list[str], list[str]]:
    """The benchmarks of the table and notes on those left out: ``table.datasets`` (each must open: a missing
    one is an error naming its folder), else every benchmark whose adapter opens under ``data_root``."""
    from ..datasets import get_dataset

    asked = (cfg.get("table") or {}).get("datasets")
    names = list(asked) if asked else list(BENCHMARKS)
    found, missing = [], []
    for name in names:
        try:
            get_dataset(normalise({"dataset": name, "data_root": cfg["data_root"]})).image_ids()
        except DatasetError as exc:
            missing.append((name, str(exc)))
            continue
        found.append(name)
    if asked and missing:
        raise DatasetError("table.datasets names benchmarks that cannot be opened under data_root "
                           f"{cfg['data_root']}: " + "; ".join(f"{n}: {why}" for n, why in missing))
    if not found:
        raise DatasetError(
            f"no benchmark found under data_root {cfg['data_root']} (looked for "
            + ", ".join(f"{DESCRIPTORS[n].name}: {DESCRIPTORS[n].layout}" for n in names)
            + "); `pnp-ovss prepare --dataset NAME --download --downloads DIR --data-root DATA` makes one"
        )
    notes = [f"{n} not in the table: {why}" for n, why in missing]
    return found, notes


def base_config(cfg: dict) -> dict:
    """The run's config as every cell starts from it: everything but the table's own section."""
    return {k: copy.deepcopy(v) for k, v in cfg.items() if k != "table"}


def table_cells(cfg: dict, datasets: list[str]) -> list[Cell]:
    """Every (row, benchmark variant) cell, each row's overlay checked: a bad key or value names the row, an
    overlay that sweeps is refused (one setting per row), a row's mmseg run covers every variant of a benchmark
    unless its overlay names one."""
    rows = (cfg.get("table") or {}).get("rows") or []
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"table.rows: row names must differ (given: {', '.join(names)})")
    cells = []
    for row in rows:
        overlay = copy.deepcopy(row.get("config") or {})
        if "dataset" in overlay or "table" in overlay:
            raise ConfigError(f"table row {row['name']!r}: an overlay cannot set dataset or table "
                              "(the table runs each row on every benchmark of table.datasets)")
        for dataset in datasets:
            try:
                run_cfg = base_config(normalise(deep_merge(base_config(cfg), {**overlay, "dataset": dataset})))
            except ConfigError as exc:
                raise ConfigError(f"table row {row['name']!r} on {dataset}: {exc}") from None
            if len(plan_runs(run_cfg)[0]) > 1:
                raise ConfigError(f"table row {row['name']!r}: its config sweeps (a list value); a table row is one "
                                  "setting: give each value its own row")
            protocol = run_cfg["protocol"]
            if protocol == "pnp":
                variants = [None]
            elif run_cfg.get("mmseg_variant"):
                variants = [run_cfg["mmseg_variant"]]
            else:
                variants = list(DESCRIPTORS[dataset].mmseg_variants)
            for variant in variants:
                # the default variant is given as null, as a plain run gives it, so the evaluation is shared too
                given = None if variant == DESCRIPTORS[dataset].mmseg_variants[0] else variant
                cell_cfg = dict(run_cfg, mmseg_variant=given) if protocol == "mmseg" else run_cfg
                cells.append(Cell(row["name"], dataset, column_of(dataset, protocol, variant), variant, cell_cfg))
    return cells


def cell_config_yaml(cell: Cell) -> str:
    """The configfile a cell's run is started with (its whole config: nothing is left to defaults)."""
    return (f"# pnp-ovss table cell: {cell.label} (written by `snakemake table`; the run reads nothing else)\n"
            + yaml.safe_dump(cell.config, sort_keys=False))


# --- a cell's result ---------------------------------------------------------------------------------------


def cell_result(cell: Cell) -> dict:
    """What a finished cell's run wrote: its run's miou.csv row, found from the cell's own plan (the evaluation
    folder its keys name). A cell whose plan still has work did not finish: an error, never an old number."""
    from ..plan import make_plan

    plan = make_plan(cell.config, repair=False, write_memos=False, looks_only=True)
    pending = [j for j in plan.pipeline_jobs() if j.needed]
    if pending:
        raise DatasetError(f"{cell.label}: its run did not finish ({len(pending)} job(s) still have work); "
                           "see its log")
    run = plan.runs[0]
    path = Path(plan.eval_dir(run.evaluate)) / MIOU_CSV
    if not path.is_file():
        raise DatasetError(f"{path}: the evaluation of {cell.label} is missing after its run; see its log")
    row = pd.read_csv(path).iloc[0].to_dict()
    return {
        "row": cell.row, "kind": "measured", "dataset": cell.dataset, "column": cell.column,
        "protocol": cell.config["protocol"], "variant": cell.variant or f"pnp-{cell.dataset}",
        "labels": resolved_label_source(cell.config), "mIoU": float(row["mIoU"]), "mBIoU": float(row["mBIoU"]),
        "n_images": int(row["n_images"]), "n_skipped": int(row["n_skipped"]), "evaluate_hash": run.evaluate,
        "miou_csv": str(path),
    }


# --- quoted rows -------------------------------------------------------------------------------------------


def load_reference_rows(path=REFERENCE_REF) -> list[dict]:
    """The quoted rows: name, source, setting, values per column (missing = not published there), and the
    published average where there is one. Checked: known columns, numbers in 0..100, a source for each."""
    path = Path(path) if isinstance(path, str) else path  # a file, or the packaged resource
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows = []
    for entry in data or []:
        where = f"{path}: quoted row {entry.get('name')!r}"
        if not entry.get("name") or not entry.get("source"):
            raise ConfigError(f"{where}: every quoted row needs a name and a source")
        values = entry.get("values") or {}
        unknown = set(values) - set(COLUMN_NAMES)
        if unknown:
            raise ConfigError(f"{where}: unknown columns {sorted(unknown)} (known: {', '.join(COLUMN_NAMES)})")
        for column, value in values.items():
            if not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ConfigError(f"{where}: {column} = {value!r} is not an mIoU in 0..100")
        rows.append({"name": entry["name"], "source": entry["source"], "setting": entry.get("setting", ""),
                     "values": {k: float(v) for k, v in values.items()},
                     "published_average": entry.get("published_average")})
    return rows


# --- the table ---------------------------------------------------------------------------------------------


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(sum(values) / len(values), 2) if values else None


def compose_table(results: list[dict], reference: list[dict], row_order: list[str]) -> pd.DataFrame:
    """The wide table: one row per measured configuration (in ``row_order``), then the quoted rows; a column per
    benchmark variant (mIoU, 2 decimals), ``average`` over the columns this table measured that the row has
    (``averaged_over`` says how many of them), ``mBIoU`` (measured rows: the mean over their cells)."""
    measured_columns = [c for c in COLUMN_NAMES if any(r["column"] == c for r in results)]
    out = []
    for name in row_order:
        cells = [r for r in results if r["row"] == name]
        values = {r["column"]: round(r["mIoU"], 2) for r in cells}
        have = [c for c in measured_columns if c in values]
        labels = sorted({r["labels"] for r in cells})
        out.append({"row": name, "kind": "measured", **{c: values.get(c) for c in COLUMN_NAMES},
                    "average": _mean(values[c] for c in have), "averaged_over": f"{len(have)} of {len(measured_columns)}",
                    "mBIoU": _mean(r["mBIoU"] for r in cells), "protocol": "/".join(sorted({r["protocol"] for r in cells})),
                    "labels": "/".join(labels), "images": sum(r["n_images"] for r in cells),
                    "source": "measured by this run (table-cells.csv lists each cell's miou.csv)"})
    for ref in reference:
        have = [c for c in measured_columns if c in ref["values"]]
        out.append({"row": ref["name"], "kind": "quoted", **{c: ref["values"].get(c) for c in COLUMN_NAMES},
                    "average": _mean(ref["values"][c] for c in have),
                    "averaged_over": f"{len(have)} of {len(measured_columns)}", "mBIoU": None,
                    "protocol": ref["setting"], "labels": "", "images": None,
                    "published_average": ref.get("published_average"), "source": ref["source"]})
    frame = pd.DataFrame(out)
    if "published_average" not in frame:
        frame["published_average"] = None
    order = ["row", "kind", *COLUMN_NAMES, "average", "averaged_over", "mBIoU", "published_average", "protocol",
             "labels", "images", "source"]
    return frame[order]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table_markdown(table: pd.DataFrame, notes: list[str], when: str) -> str:
    """``table.md``: the measured rows, a rule, the quoted rows (marked), then what each row is and its source."""
    head = ["row", *COLUMN_NAMES, "avg", "mBIoU"]
    lines = [f"# The field's table ({when})", "",
             ("mIoU (%) per benchmark variant; avg over the benchmarks this table measured that the row has; "
              "mBIoU: boundary IoU (Cheng et al. 2021), mean over the row's benchmarks. Quoted rows (*quoted*) are "
              "published numbers, not measured here, with their sources below."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    measured = table[table["kind"] == "measured"]
    quoted = table[table["kind"] == "quoted"]
    for _, r in measured.iterrows():
        lines.append("| " + " | ".join([f"**{r['row']}**", *(_fmt(r[c]) for c in COLUMN_NAMES),
                                        f"{_fmt(r['average'])} ({r['averaged_over']})", _fmt(r["mBIoU"])]) + " |")
    for _, r in quoted.iterrows():
        lines.append("| " + " | ".join([f"*{r['row']}* (quoted)", *(_fmt(r[c]) for c in COLUMN_NAMES),
                                        f"{_fmt(r['average'])} ({r['averaged_over']})", "—"]) + " |")
    lines += ["", "## Rows", ""]
    for _, r in measured.iterrows():
        lines.append(f"- **{r['row']}** — measured: protocol {r['protocol']}, labels {r['labels']}, "
                     f"{int(r['images'])} image evaluations.")
    for _, r in quoted.iterrows():
        published = r.get("published_average")
        extra = f" Published average over their eight: {published}." if published is not None and not (
            isinstance(published, float) and math.isnan(published)) else ""
        lines.append(f"- *{r['row']}* — quoted ({r['protocol']}). Source: {r['source']}.{extra}")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", ("`pnp` scoring is the released code's (background counted, boundaries as background); `mmseg` "
                   "scoring is mmsegmentation's IoUMetric (the peers'). docs/table.md says how each column is made."), ""]
    return "\n".join(lines)


def table_figure(table: pd.DataFrame) -> bytes:
    """Grouped bars: a group per benchmark column, a bar per row (quoted rows hatched), PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in COLUMN_NAMES if table[c].notna().any()]
    table = table[table[list(COLUMN_NAMES)].notna().any(axis=1)]  # a quoted row with only an average: no bars
    n = max(1, len(table))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(columns) + 2), 4.2), dpi=110)
    for k, (_, r) in enumerate(table.iterrows()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(columns))]
        ys = [0.0 if pd.isna(r[c]) else float(r[c]) for c in columns]
        quoted = r["kind"] == "quoted"
        ax.bar(xs, ys, width * 0.95, label=r["row"] + (" (quoted)" if quoted else ""),
               hatch="//" if quoted else None, alpha=0.55 if quoted else 1.0, edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.set_title("mIoU per benchmark: measured rows solid, quoted rows hatched", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_table(out_dir: Path, results: list[dict], reference: list[dict], row_order: list[str], notes: list[str],
                when: str) -> pd.DataFrame:
    """``table.csv``, ``table.md``, ``table.png`` and ``table-cells.csv`` (one line per cell) under ``out_dir``."""
    out_dir = Path(out_dir)
    table = compose_table(results, reference, row_order)
    atomic_write_text(out_dir / TABLE_CSV, table.to_csv(index=False))
    atomic_write_text(out_dir / TABLE_MD, table_markdown(table, notes, when))
    atomic_write_bytes(out_dir / TABLE_PNG, table_figure(table))
    atomic_write_text(out_dir / CELLS_CSV, pd.DataFrame(results).to_csv(index=False))
    return table


# --- the table job -----------------------------------------------------------------------------------------


def run_table(cfg: dict, *, python: str, snakefile: str, workdir: str, cores: int, forwarded: list[str],
              log, say) -> pd.DataFrame:
    """Run every cell (an ordinary run each, sequentially: each uses every core it is given) and write the table.
    ``say`` gets one progress line per cell (the console); ``log`` (a logger) gets those and each cell's command.
    A failed cell stops the table with the end of that cell's log and its path; nothing is averaged over a
    missing cell."""
    import subprocess
    import time

    results_dir = Path(cfg["results"])
    datasets, notes = found_benchmarks(cfg)
    cells = table_cells(cfg, datasets)
    rows = [r["name"] for r in cfg["table"]["rows"]]
    say(f"table: {len(rows)} row(s) × {len(datasets)} benchmark(s) ({', '.join(datasets)}) = {len(cells)} cell(s)")
    for note in notes:
        say(f"table: {note}")
    runs_dir, logs_dir = results_dir / "table" / "runs", results_dir / "logs" / "table"
    results = []
    for k, cell in enumerate(cells, 1):
        configfile = runs_dir / f"{cell.slug}.yaml"
        cell_log = logs_dir / f"{cell.slug}.log"
        atomic_write_text(configfile, cell_config_yaml(cell))
        cell_log.parent.mkdir(parents=True, exist_ok=True)
        command = cell_command(python, snakefile, workdir, cores, str(configfile), forwarded)
        log.info("cell %d/%d %s: %s", k, len(cells), cell.label, " ".join(command))
        start = time.perf_counter()
        with open(cell_log, "w", encoding="utf-8") as fh:
            proc = subprocess.run(command, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, text=True, check=False)
        seconds = time.perf_counter() - start
        text = cell_log.read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(text.splitlines()[-25:])
            raise DatasetError(f"table cell {cell.label} failed (exit {proc.returncode}); its log: {cell_log}\n{tail}")
        result = cell_result(cell)
        results.append(result)
        ran = {rule: n for rule, n in jobs_run(text).items() if rule != "table_cell"}
        what = ("every result reused" if not ran
                else "ran " + ", ".join(f"{n} {rule}" for rule, n in ran.items()))
        say(f"table: [{k}/{len(cells)}] {cell.label}: mIoU {result['mIoU']:.2f}, mBIoU {result['mBIoU']:.2f} "
            f"({result['n_images']} images; {what}, {seconds:.0f} s; log {cell_log})")
    reference = load_reference_rows() if cfg["table"].get("reference", True) else []
    when = time.strftime("%Y-%m-%d %H:%M")
    table = write_table(results_dir, results, reference, rows, notes, when)
    say(f"table: {results_dir / TABLE_CSV}, {results_dir / TABLE_MD}, {results_dir / TABLE_PNG} "
        f"({len(rows)} measured row(s), {len(reference)} quoted)")
    return table
