"""Rule table: every configured row on every benchmark found (one ordinary run per cell), then results/table.csv,
table.md and table.png beside the quoted rows (pnp_ovss.stages.table)."""
import sys

from pnp_ovss.stages.job import JobContext
from pnp_ovss.stages.table import run_table


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    job.log.info(line)


job = JobContext.from_snakemake(snakemake, "table")  # noqa: F821 (injected by Snakemake)
run_table(job.config, python=sys.executable, snakefile=job.params.snakefile, workdir=job.params.workdir,
          cores=snakemake.threads, forwarded=list(job.params.forwarded), log=job.log, say=say)  # noqa: F821
