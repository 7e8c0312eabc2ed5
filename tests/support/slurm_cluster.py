"""A throw-away single-node SLURM cluster on localhost, for tests.

Everything lives in one temporary folder: a generated munge key and munged's socket, pid, log and seed
files; ``slurm.conf`` / ``gres.conf`` / an empty ``plugstack.conf``; slurmctld's state and slurmd's spool;
all logs. The daemons run in the foreground as children of the test (munged, slurmctld, slurmd) on free
TCP ports, so several clusters, or a real SLURM installation, can coexist with it: nothing under /etc or
/run is read or written.

The cluster (Debian ``slurm-wlm`` 22.05, no systemd, no slurmdbd):

- ``proctrack/linuxproc``, ``task/none``: no cgroups needed.
- ``select/cons_tres`` with ``CR_Core_Memory``: cores and memory are scheduled, so a job's
  ``--cpus-per-task`` / ``--mem`` are real requests that the test can read back with ``scontrol``.
- ``accounting_storage/none``: no slurmdbd. ``sacct`` cannot see jobs, so clients must query status with
  ``squeue``; ``MinJobAge`` keeps finished jobs visible to ``squeue`` (and to ``scontrol show job``) long
  enough: at least three times the executor plugin's status interval.
- one fake ``gpu`` GRES backed by ``/dev/null`` (``GresTypes=gpu``, ``Gres=gpu:1``), so ``--gpus=1``
  (what snakemake-executor-plugin-slurm turns ``resources: gpu=1`` into) is schedulable.
- ``SlurmdParameters=config_overrides``: the node is the size this file declares, not the size of the
  machine, so a rule's production memory request (e.g. 16 GB for gradcam) fits on a small CI runner.
  Nothing is enforced (no cgroups); the jobs only use what they really need.

``SLURM_CONF`` and the inner ``srun``: snakemake-executor-plugin-slurm-jobstep (the part that runs inside
the batch job) removes every ``SLURM_*`` variable except a few job-identity ones before it calls
``srun`` for the job step, ``SLURM_CONF`` included. That ``srun`` then reads the compiled-in default
``/etc/slurm/slurm.conf`` and fails on any cluster whose configuration lives elsewhere. The plugin has
no setting that keeps the variable (``--envvars`` only adds to the batch environment, which is not the
problem). We therefore put a one-line ``srun`` wrapper first on the ``PATH`` of the clients (see
:attr:`SlurmCluster.env`): it sets ``SLURM_CONF`` to this cluster's file and ``exec``\\ s the real
``srun``. ``sbatch --export=ALL`` (the plugin's default) carries that ``PATH`` into the job, and the
jobstep's ``srun`` resolves to the wrapper. No system file is touched, so the test needs no cleanup of
/etc and cannot break a real SLURM installation on the same machine.

Shutdown (:meth:`SlurmCluster.stop`): ``scancel`` every job, SIGTERM to slurmd, slurmctld and munged by
the PIDs the test started, SIGKILL after a grace period; then a sweep for leftovers by PID: every process
whose environment carries this cluster's unique marker variable (the daemons and everything they or the
test's clients started inherit it: slurmstepd, job steps, a snakemake still running) is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
MARKER = "PNP_OVSS_TEST_SLURM_CLUSTER"
NODE = "localhost"
PARTITION = "debug"


def missing_programs() -> list[str]:
    """Programs the cluster needs that are not installed (Debian: ``slurm-wlm`` and ``munge``)."""
    search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [p for p in DAEMONS + CLIENTS if shutil.which(p, path=search) is None]


def _which(prog: str) -> str:
    found = shutil.which(prog, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError(prog)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text[-lines:])


class ClusterError(RuntimeError):
    pass


@dataclass
class SlurmCluster:
    """A single-node SLURM cluster in ``root``. Use as a context manager or call start()/stop()."""

    root: Path
    cpus: int = field(default_factory=lambda: max(os.cpu_count() or 1, 4))
    memory_mb: int = 32000
    gpus: int = 1
    min_job_age: int = 300
    start_timeout: float = 90.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.etc = self.root / "etc"
        self.conf = self.etc / "slurm.conf"
        self.bin = self.root / "bin"
        self.log_dir = self.root / "log"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()

    # ---- environment for clients (sbatch, squeue, snakemake) ------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF, the srun wrapper first on PATH and the cluster marker."""
        env = dict(os.environ)
        for var in list(env):
            if var.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_")):
                del env[var]
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env[MARKER] = self.marker
        return env

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        proc = subprocess.run(
            list(args), check=False, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n" + self.logs()
            )
        return proc

    # ---- files --------------------------------------------------------------------------------
    def write_files(self) -> None:
        for d in (self.etc, self.bin, self.log_dir, self.root / "state", self.root / "spool"):
            d.mkdir(parents=True, exist_ok=True)
        # munged insists on private directories and a private key it owns
        self.munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.munge_dir, 0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)

        (self.etc / "plugstack.conf").write_text("")
        (self.etc / "gres.conf").write_text(
            f"# one fake GPU: --gpus=1 becomes schedulable; nothing opens the device\n"
            f"NodeName={NODE} Name=gpu File=/dev/null\n"
        )
        r = self.root
        self.conf.write_text(
            f"""# generated by tests/slurm_cluster.py: a single-node test cluster on localhost
ClusterName=pnptest{self.marker[:6]}
SlurmctldHost={NODE}
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={self.log_dir}/slurmctld.log
SlurmdLogFile={self.log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={self.etc}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem gets this per core instead of the whole node
DefMemPerCPU=100
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
GresTypes=gpu
# finished jobs stay visible to squeue / scontrol this long (status command: squeue)
MinJobAge={self.min_job_age}
ReturnToService=2
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
Waittime=0
SlurmdTimeout=60
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
        )
        # the jobstep plugin drops SLURM_CONF before its srun: this wrapper puts it back
        srun = self.bin / "srun"
        srun.write_text(
            f"#!/bin/sh\n"
            f"# generated by tests/slurm_cluster.py: the test cluster's config for every srun\n"
            f"SLURM_CONF='{self.conf}'\nexport SLURM_CONF\n"
            f"exec '{_which('srun')}' \"$@\"\n"
        )
        srun.chmod(0o755)

    # ---- lifecycle ----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.log_dir / f"{name}.stdout", "ab") as out:
            self.procs[name] = subprocess.Popen(
                args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest does not hit the daemons first
            )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode} during start\n" + self.logs())

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n" + self.logs())
            time.sleep(0.5)

    def start(self) -> SlurmCluster:
        self.write_files()
        try:
            self._spawn(
                "munged",
                [
                    _which("munged"),
                    "--foreground",
                    "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.munge_dir / 'munge.key'}",
                    f"--pid-file={self.munge_dir / 'munged.pid'}",
                    f"--seed-file={self.munge_dir / 'munged.seed'}",
                    f"--log-file={self.log_dir / 'munged.log'}",
                ],
            )
            self._wait("munged's socket", self.munge_socket.exists, 20)
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait(
                "slurmctld (scontrol ping)",
                lambda: "UP" in self.run("scontrol", "ping", check=False, timeout=10).stdout,
                self.start_timeout,
            )
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
            self._wait("the node to be idle", self._node_idle, self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=10).stdout
        return any(line.split()[1:2] == ["idle"] for line in out.splitlines())

    def stop(self, grace: float = 15.0) -> list[int]:
        """Cancel all jobs, stop the daemons this object started, then kill leftovers by PID.
        Returns the PIDs of leftovers that had to be killed by the sweep."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", f"--partition={PARTITION}", check=False, timeout=15)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    q = self.run("squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i", check=False, timeout=10)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        return self.kill_leftovers()

    def leftover_pids(self) -> list[int]:
        """PIDs of live processes that carry this cluster's marker in their environment."""
        needle = f"{MARKER}={self.marker}".encode()
        me = os.getpid()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def kill_leftovers(self) -> list[int]:
        killed = []
        for _ in range(5):
            pids = self.leftover_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(timeout=5)
        return sorted(set(killed))

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- diagnostics --------------------------------------------------------------------------
    def logs(self, lines: int = 60) -> str:
        parts = []
        for daemon in DAEMONS:
            # the log file; the daemon's own stdout/stderr only where it never got to open its log
            path = self.log_dir / f"{daemon}.log"
            if not path.exists() or not path.stat().st_size:
                path = self.log_dir / f"{daemon}.stdout"
            if path.exists():
                parts.append(f"---- {path} (last {lines} lines)\n{_tail(path, lines)}")
        return "\n".join(parts)

    def jobs(self) -> list[dict[str, str]]:
        """All jobs slurmctld still knows (finished ones for MinJobAge seconds), as key=value dicts."""
        out = self.run("scontrol", "show", "job", "-o", "-d").stdout
        jobs = []
        for line in out.splitlines():
            if not line.strip() or line.startswith("No jobs"):
                continue
            job = {}
            for token in line.split():
                if "=" in token:
                    k, v = token.split("=", 1)
                    job.setdefault(k, v)
            jobs.append(job)
        return jobs
