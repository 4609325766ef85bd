"""A real one-node Slurm for tests: munged, slurmctld and slurmd on private paths and ports.

Debian's `munge` and `slurm-wlm` (22.05) are installed by tests/slurm/install-slurm.sh, which
`make test` runs. The cluster has no accounting (`accounting_storage/none`), like many small
clusters: there is no `sacct`, and a job's state after it ends comes only from `scontrol show
job` (for MinJobAge, 300 s) or from what the job itself wrote. Everything lives in one temp dir
(config, munge key and socket, spool, state, pid and log files) on ports chosen free, so it never
clashes with a system Slurm or another test session's cluster.

A test module uses it with `from slurm_cluster import slurm_cluster`; the fixture skips (with
the reason) where the binaries are missing or the daemons need root that the user lacks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
BINARIES += ("scontrol",)
# The daemons live in sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
START_TIMEOUT_S = 30.0
INSTALL_HINT = "run tests/slurm/install-slurm.sh (as root: apt-get install munge slurm-wlm)"


class SlurmStartError(RuntimeError):
    """The daemons did not bring the node to idle; the message holds their logs."""


@dataclass(frozen=True)
class QueuedJob:
    """One line of `squeue`: a job (or array task) id, its state and Slurm's reason."""

    job_id: str
    state: str
    reason: str


@dataclass
class SlurmCluster:
    """A started one-node cluster: its paths, the environment its clients need, and helpers."""

    root: Path
    conf: Path
    node: str
    cpus: int
    env: dict[str, str]
    start_s: float = 0.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 30.0) -> str:
        """Run a Slurm client command against this cluster; return its stdout, or raise
        RuntimeError with its stderr if it fails."""
        proc = self.run_unchecked(*args, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def run_unchecked(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster, whatever its exit status."""
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def sbatch(self, *args: str) -> str:
        """Submit with `sbatch --parsable ARGS`; return the job id."""
        return self.run("sbatch", "--parsable", *args).strip().split(";")[0]

    def squeue(self, job_id: str | None = None) -> list[QueuedJob]:
        """The queue (pending, running, completing), one entry per job or array task."""
        args = ["squeue", "--noheader", "--array", "--format=%i|%T|%r"]
        if job_id is not None:
            args.append(f"--jobs={job_id}")
        proc = self.run_unchecked(*args)
        # squeue -j ID fails with "Invalid job id" once slurmctld has purged the job.
        if proc.returncode != 0 and not (job_id and "Invalid job id" in proc.stderr):
            raise RuntimeError(f"squeue exited {proc.returncode}: {proc.stderr.strip()}")
        out = proc.stdout
        return [QueuedJob(*line.split("|", 2)) for line in out.splitlines() if line.strip()]

    def job_state(self, job_id: str) -> str:
        """JobState from `scontrol show job`: the only record of an ended job without
        accounting (kept for MinJobAge seconds); "" once slurmctld has forgotten it."""
        out = self.run_unchecked("scontrol", "--oneliner", "show", "job", job_id).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.removeprefix("JobState=")
        return ""

    def scancel(self, *job_ids: str, sig: str | None = None) -> None:
        """Cancel jobs (or send them `sig`, e.g. "KILL", with `scancel --signal`)."""
        extra = [f"--signal={sig}"] if sig else []
        self.run("scancel", *extra, *job_ids)

    def node_state(self) -> str:
        """The node's state as `sinfo` prints it (idle, mixed, allocated, down, ...)."""
        return self.run("sinfo", "--noheader", "--format=%T", f"--nodes={self.node}").strip()

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 20.0) -> float:
        """Poll `ready` every 0.1 s until it holds; return the seconds it took, or fail."""
        start = time.monotonic()
        while not ready():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)
        return time.monotonic() - start

    def wait_gone(self, job_id: str, timeout: float = 20.0) -> float:
        """Wait until `squeue` no longer lists the job (or any of its array tasks)."""
        return self.wait_for(
            f"job {job_id} to leave squeue", lambda: not self.squeue(job_id), timeout
        )

    def logs(self) -> str:
        """The tails of the daemons' logs, for a failure message."""
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free on this machine now (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cpus() -> int:
    # slurmd drains a node configured with more CPUs than it finds; fewer is fine.
    return min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))


def _real_memory_mb() -> int:
    # Half the machine: a RealMemory above what slurmd measures drains the node.
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(256, total // 2**20 // 2)


def _slurm_conf(root: Path, node: str, cpus: int, munge_socket: Path) -> str:
    ctld_port, slurmd_port = _free_ports(2)
    return "\n".join(
        [
            "ClusterName=srat-test",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            # The default batch_sched_delay=3 starts a job 2-3 s after it can run; 0 makes it
            # ~1 s (slurmctld's background cycle), which divides an array test's time by 3.
            "SchedulerParameters=batch_sched_delay=0",
            # A cancelled job gets SIGTERM, then SIGKILL KillWait s later (30 by default);
            # submitit's jobs ignore SIGTERM, so each cancel of one would cost the full wait.
            "KillWait=5",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_real_memory_mb()}"
            " State=UNKNOWN",
            f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _binary(name: str) -> str:
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        raise SlurmStartError(f"{name} not found ({INSTALL_HINT})")
    return path


def _start(name: str, args: list[str], cluster: SlurmCluster) -> None:
    with (cluster.root / "log" / f"{name}.stderr").open("wb") as log:
        cluster.procs[name] = subprocess.Popen(
            [_binary(name), *args],
            env=cluster.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _check_alive(cluster: SlurmCluster) -> None:
    for name, proc in cluster.procs.items():
        if proc.poll() is not None:
            raise SlurmStartError(f"{name} exited {proc.returncode}\n{cluster.logs()}")


def _wait_until(what: str, ready: Callable[[], bool], cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        _check_alive(cluster)
        if time.monotonic() > deadline:
            raise SlurmStartError(f"no {what} after {START_TIMEOUT_S:.0f} s\n{cluster.logs()}")
        time.sleep(0.1)


def _node_idle(cluster: SlurmCluster) -> bool:
    try:
        return cluster.node_state() == "idle"
    except (RuntimeError, subprocess.TimeoutExpired):
        return False  # slurmctld not listening yet


def start_cluster(root: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under `root`; return once `sinfo` says idle.

    Raises SlurmStartError (with the daemons' logs) if a daemon exits or the node is not idle
    within 30 s, after stopping whatever it had started.
    """
    for sub in ("munge", "state", "spool", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # munged refuses a socket directory that others can write; the key itself is 0600.
    (root / "munge").chmod(0o755)
    key, munge_socket = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, _cpus(), munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=_cpus(), env=env)
    start = time.monotonic()
    try:
        subprocess.run(
            [_binary("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True
        )
        # --force: munged otherwise refuses to run as root; all its paths are private, so a
        # system munged (on /run/munge) is never touched.
        munged = ["--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}"]
        munged += [
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'seed'}",
        ]
        munged += [f"--log-file={root / 'log' / 'munged.log'}"]
        _start("munged", munged, cluster)
        _wait_until("munge socket", munge_socket.exists, cluster)
        _start("slurmctld", ["-D", "-f", str(conf)], cluster)
        _start("slurmd", ["-D", "-f", str(conf), "-N", node], cluster)
        _wait_until("idle node in sinfo", lambda: _node_idle(cluster), cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    cluster.start_s = time.monotonic() - start
    return cluster


def _stepds(cluster: SlurmCluster) -> list[psutil.Process]:
    """This cluster's slurmstepd processes: those writing to its slurmd log (their environment
    is empty, so SLURM_CONF cannot tell)."""
    log = str(cluster.root / "log" / "slurmd.log")
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "slurmstepd":
            continue
        try:
            if any(f.path == log for f in proc.open_files()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def stop_cluster(cluster: SlurmCluster) -> None:
    """Cancel every job, let the jobs' slurmstepd processes end, then stop the daemons by
    their pids (TERM, then KILL after 10 s)."""
    if cluster.procs.get("slurmctld") and cluster.procs["slurmctld"].poll() is None:
        try:
            ids = [job.job_id for job in cluster.squeue()]
            if ids:
                cluster.scancel(*ids)
                cluster.wait_for("jobs to end", lambda: not cluster.squeue(), timeout=10)
            # A slurmstepd outlives its job for a moment, and slurmd if stopped first.
            cluster.wait_for("slurmstepd to end", lambda: not _stepds(cluster), timeout=10)
        except (RuntimeError, AssertionError, subprocess.TimeoutExpired):
            pass
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def skip_reason() -> str | None:
    """Why a real Slurm cannot start here, or None if it can."""
    missing = [b for b in BINARIES if shutil.which(b, path=SEARCH_PATH) is None]
    if missing:
        return f"Slurm test cluster: {', '.join(missing)} not installed ({INSTALL_HINT})"
    if os.geteuid() != 0:
        return "Slurm test cluster: slurmd and SlurmUser=root need root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One real one-node Slurm for the session (see the module docstring)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    try:
        cluster = start_cluster(root)
    except SlurmStartError as exc:
        pytest.fail(f"the one-node Slurm did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
