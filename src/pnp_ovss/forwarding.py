"""How `snakemake table` starts the run of one table cell: this workflow again, with the cell's configfile and the
options of the table's own command line that say how and where jobs run (profiles, executor, jobs, resources).

Read at parse time by rules/table.smk, so it imports nothing (a model job's parse stays light).
"""

from __future__ import annotations

#: options of the `snakemake table` command line that its cells' runs are started with too (how and where jobs
#: run); with a value, then without one
FORWARDED_WITH_VALUE = ("--profile", "--workflow-profile", "--executor", "-e", "--jobs", "-j", "--resources",
                        "--res", "--default-resources", "--set-resources", "--set-threads", "--latency-wait",
                        "--software-deployment-method", "--sdm", "--max-jobs-per-second", "--local-cores",
                        "--rerun-triggers")
FORWARDED_FLAGS = ("--keep-going", "-k", "--printshellcmds", "-p", "--rerun-incomplete", "--ri", "--quiet", "-q",
                   "--use-conda", "--nolock")


RERUN_TRIGGERS = ("mtime", "params", "input", "software-env", "code")


def _more_values(option: str, value: str) -> bool:
    """Whether ``value`` after ``option``'s first value is one more of its values (not a target such as
    ``table``): ``key=value`` for resources and threads, a trigger name for ``--rerun-triggers``."""
    if option == "--rerun-triggers":
        return value in RERUN_TRIGGERS
    if option in ("--resources", "--res", "--default-resources", "--set-resources", "--set-threads"):
        return "=" in value
    return False


def forwarded_options(argv: list[str]) -> list[str]:
    """The options of ``argv`` (the `snakemake table` command line) a cell's run gets too: profiles, executor,
    jobs and resources (so that on a cluster the cells' jobs go where the table's would), a few flags. Options
    taking several values (``--resources a=1 b=2``) keep every value up to the next option."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in FORWARDED_WITH_VALUE:
            if "=" in arg:
                out.append(arg)
                i += 1
                continue
            out.append(arg)
            i += 1
            first = True
            while i < len(argv) and not argv[i].startswith("-") and (first or _more_values(name, argv[i])):
                out.append(argv[i])
                i += 1
                first = False
            continue
        if arg in FORWARDED_FLAGS:
            out.append(arg)
        i += 1
    return out


def cell_command(python: str, snakefile: str, workdir: str, cores: int, configfile: str,
                 forwarded: list[str]) -> list[str]:
    """The command that runs one cell (target ``table_cell``): this workflow, its own configfile, the table's
    cores and options."""
    return [python, "-m", "snakemake", "table_cell", "--snakefile", snakefile, "--directory", workdir,
            "--cores", str(cores), *forwarded, "--configfile", configfile]


def jobs_run(log_text: str) -> dict[str, int]:
    """The job counts of a snakemake run's "Job stats" table ({} when it planned nothing)."""
    if "Job stats:" not in log_text:
        return {}
    counts = {}
    for line in log_text.split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts
