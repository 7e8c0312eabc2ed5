"""What the console says at the end of a run: the cause of each failed job in one line, and the images
skipped with ``on_error: skip`` (the Snakefile's ``onerror`` / ``onsuccess`` handlers call these)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

ERROR_BLOCK = re.compile(r"^Error in rule (\w+):\n((?:[ \t]+.*\n?)*)", re.M)
LOG_LINE = re.compile(r"^\s+log: (\S+)", re.M)
RECORD = re.compile(r"^\S+ \S+ ERROR [\w.]+: (.*)$")

SKIP_HINT = "to record unreadable images in skipped.csv and go on: --config on_error=skip"


def job_error(log_path: Path) -> str | None:
    """The last error a rule script recorded in its log (its message only), or None."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        m = RECORD.match(line)
        if m:
            return m.group(1)
    return None


def failed_jobs(snakemake_log: str) -> list[tuple[str, list[str]]]:
    """(rule, [its log files]) for every "Error in rule" block of a Snakemake log."""
    return [(m.group(1), LOG_LINE.findall(m.group(2))) for m in ERROR_BLOCK.finditer(snakemake_log)]


def failure_lines(snakemake_log: str, on_error: str = "fail", root: Path | None = None) -> list[str]:
    """One line per failed job: rule, its log and the error it recorded (with what to do where we know)."""
    out = []
    for rule, logs in failed_jobs(snakemake_log):
        message = None
        for log in logs:
            path = Path(log) if root is None or Path(log).is_absolute() else Path(root) / log
            message = job_error(path) or message
        where = logs[0] if logs else "(no log)"
        if message is None:
            out.append(f"{rule}: failed without an error in its log (killed, or out of memory?); see {where}")
            continue
        if "unreadable or truncated image" in message and on_error != "skip":
            message = f"{message} — {SKIP_HINT}"
        out.append(f"{rule}: {message}  [log: {where}]")
    return out


def skipped_summary(skipped_csvs: list[Path]) -> str | None:
    """"N images skipped, listed in …" over the current runs' skipped.csv files, or None when none was."""
    images, listed = set(), []
    for path in skipped_csvs:
        path = Path(path)
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            images |= {r["image_id"] for r in rows}
            listed.append(str(path))
    if not images:
        return None
    return f"{len(images)} image(s) skipped (on_error: skip); listed with the reason in {', '.join(listed)}"


def outputs_summary(paths: dict, evaluates: bool, dataset: str) -> list[str]:
    """The end of a successful run: where its outputs are, and why there is no miou.csv when there is none."""
    latest, last_run = paths["latest"], paths["last_run"]
    lines = [f"masks by image name in {latest}/ (with parameters.csv); every result under {latest.parent}/"]
    if evaluates:
        lines.append(f"scores in {paths['miou']} (one row per run; every run ever scored here: "
                     f"{latest.parent / 'runs.csv'})")
    elif dataset == "folder":
        lines.append("no miou.csv: this folder run has no ground truth to score against (give "
                     "annotations=DIR with label PNGs named like the images to get one)")
    lines.append(f"the report: snakemake --report report.html --configfile {last_run}")
    return lines


def last_run_text(cfg: dict, path: Path) -> str:
    """The whole config of a run, as a file ``--configfile`` accepts, so that
    ``snakemake --report report.html --configfile <results>/last-run.yaml`` needs no retyped overrides."""
    import yaml

    header = (
        "# The configuration of the last successful run (written by the workflow).\n"
        "# Its report: snakemake --report report.html --configfile " + str(path) + "\n"
    )
    return header + yaml.safe_dump(dict(cfg), sort_keys=False)
