"""A throw-away single-node SLURM cluster for tests (``LocalSlurm``).

Usage::

    from slurm_cluster import LocalSlurm, SlurmUnavailable, PROFILE_NODE, run_snakemake_on_slurm

    try:
        with LocalSlurm(tmp_path / "slurm", **PROFILE_NODE) as cluster:
            subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env, check=True)
            result = run_snakemake_on_slurm(cluster, snakefile, workdir)   # profiles/slurm + slurm-local
    except SlurmUnavailable as exc:
        pytest.skip(str(exc))

Everything lives under the directory given to ``LocalSlurm``: a private munge key and a private
``munged`` (own socket, pid, log and seed files), ``slurm.conf``/``cgroup.conf``/``gres.conf``, the
controller state and slurmd spool directories, pid and log files (``log/``), and ``bin/`` wrappers
for the SLURM client commands. Nothing under /etc is read or written (the system munge key/socket
are not used), so it can run next to a system SLURM or another ``LocalSlurm``: the controller and
slurmd ports are picked free at start, the cluster is named ``lslurm<port>``.

Requirements: root (slurmd must run as root to launch jobs; munged as root needs ``--force``), the
Debian packages ``slurm-wlm`` and ``munge`` (installed on demand with ``scripts/install-slurm.sh``
when ``install=True``). Any failure to bring the cluster up raises :class:`SlurmUnavailable` with
the reason (and the tail of the relevant log), so a test can ``pytest.skip(str(exc))``.

Design notes (see also profiles/README.md):
- There is no slurmdbd, so ``sacct`` cannot report job states: snakemake-executor-plugin-slurm
  must use ``--slurm-status-command squeue`` (profiles/slurm-local). ``MinJobAge`` (how long
  finished jobs stay visible to ``squeue``) is 300 s, above the plugin's
  ``3 x --slurm-init-seconds-before-status-checks`` threshold, else the plugin falls back to sacct.
- ``SlurmdParameters=config_overrides``: the node advertises the configured ``cpus``/``memory_mb``
  instead of the hardware's, so the requests of a profile written for a real cluster (8 CPUs per GPU
  job, 32 GB) are schedulable here; jobs simply share the real cores (memory is not enforced).
  ``gpus`` declares fake ``gpu`` GRES (``File=/dev/null``) so ``--gpus=1`` works; jobs then see
  ``CUDA_VISIBLE_DEVICES=0`` but there is no GPU.
- ``bin/`` wrappers (first on ``env["PATH"]``) default ``SLURM_CONF`` to this cluster's file. They
  are needed because the job-side plugin (snakemake-executor-plugin-slurm-jobstep) deletes all
  ``SLURM_*`` variables, ``SLURM_CONF`` included, before its ``srun`` inside the job; on a real
  cluster that srun finds /etc/slurm/slurm.conf, which this helper must not write.
- Daemons run in their own sessions; if the test process is killed hard they survive: their pids
  are in ``<workdir>/run/*.pid`` and ``<workdir>/munge/munged.pid``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-slurm.sh"

SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
REQUIRED_COMMANDS = ("sbatch", "squeue", "sinfo", "scancel", "slurmctld", "slurmd", "munged", "munge", "unmunge")
SLURM_CLIENT_COMMANDS = (
    "sbatch", "srun", "salloc", "squeue", "sinfo", "scancel", "scontrol", "sacct", "sacctmgr", "sshare",
    "sstat", "sprio", "sreport", "sattach", "sbcast", "strigger",
)
# Environment variables that would make sbatch/squeue talk to another cluster or make the
# executor believe it runs inside a job.
_SCRUB_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_", "MUNGE_")
# AF_UNIX sun_path is 108 bytes including the NUL.
_MAX_SOCKET_PATH = 100


class SlurmUnavailable(RuntimeError):
    """The local SLURM cluster cannot be provided here; ``str(exc)`` says why."""


def _path_with_sbin(path: str | None) -> str:
    parts = [p for p in (path or os.defpath).split(os.pathsep) if p]
    parts += [d for d in SBIN_DIRS if d not in parts]
    return os.pathsep.join(parts)


def _which(cmd: str, path: str) -> str | None:
    return shutil.which(cmd, path=path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path.name})"
    return f"--- last lines of {path} ---\n" + "\n".join(lines[-n:])


def _total_memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1024


class LocalSlurm:
    """Context manager running munged + slurmctld + slurmd for one node, all under ``workdir``.

    Parameters
    ----------
    workdir: directory for all state (created; left in place for inspection after the run).
    install: run ``scripts/install-slurm.sh`` if the SLURM/munge commands are missing.
    timeout: seconds to wait for the node to become idle.
    cpus: CPUs the node advertises (default: ``os.cpu_count()``).
    memory_mb: RealMemory the node advertises (default: 90 % of MemTotal).
    gpus: number of fake ``gpu`` GRES on the node (default 0).
    partition: name of the single (default) partition.

    Attributes after start: ``env`` (full environment for subprocesses: os.environ without
    SLURM_*/SBATCH_*/... variables, plus ``SLURM_CONF`` and ``PATH`` = wrapper dir + PATH + sbin
    dirs), ``env_overrides`` (just SLURM_CONF and PATH), ``conf`` (path of slurm.conf),
    ``partition``, ``node`` (node name), ``cpus``, ``memory_mb``, ``gpus``, ``log_dir``,
    ``ctld_port``, ``slurmd_port``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        install: bool = True,
        timeout: float = 60.0,
        cpus: int | None = None,
        memory_mb: int | None = None,
        gpus: int = 0,
        partition: str = "debug",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.install = install
        self.timeout = timeout
        self.cpus = int(cpus or os.cpu_count() or 1)
        self.memory_mb = int(memory_mb or max(256, int(_total_memory_mb() * 0.9)))
        self.gpus = int(gpus)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.workdir / "etc" / "slurm.conf"
        self.log_dir = self.workdir / "log"
        self.env_overrides: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._munged_pid: int | None = None
        self._short_dir: Path | None = None
        self._started = False

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "LocalSlurm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ public helpers
    def run(self, *args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a SLURM/munge client command against this cluster (text mode, output captured)."""
        return subprocess.run(
            list(args), env=self.env, check=check, timeout=timeout, capture_output=True, text=True, **kw
        )

    def node_state(self) -> str:
        res = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False, timeout=15)
        return res.stdout.strip() if res.returncode == 0 else f"sinfo failed: {res.stderr.strip()}"

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        if self._started:
            return
        if os.geteuid() != 0:
            raise SlurmUnavailable(
                "LocalSlurm needs root (slurmd launches jobs as root; munged as root); running as uid "
                f"{os.geteuid()}"
            )
        path = _path_with_sbin(os.environ.get("PATH"))
        self._ensure_installed(path)
        self._started = True
        try:
            self._layout()
            self._write_env(path)
            self._start_munged()
            self._write_configs()
            self._start_slurm()
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def _ensure_installed(self, path: str) -> None:
        missing = [c for c in REQUIRED_COMMANDS if _which(c, path) is None]
        if not missing:
            return
        if not self.install:
            raise SlurmUnavailable(f"SLURM/munge commands missing: {', '.join(missing)} (install=False)")
        if not INSTALL_SCRIPT.exists():
            raise SlurmUnavailable(f"SLURM/munge commands missing ({', '.join(missing)}) and {INSTALL_SCRIPT} absent")
        try:
            res = subprocess.run(
                ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900,
                env={**os.environ, "PATH": path},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnavailable(f"installing SLURM failed: {exc}") from exc
        if res.returncode != 0:
            raise SlurmUnavailable(
                f"installing SLURM with {INSTALL_SCRIPT.name} failed (rc={res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-800:]}"
            )
        still = [c for c in REQUIRED_COMMANDS if _which(c, path) is None]
        if still:
            raise SlurmUnavailable(f"after install, commands still missing: {', '.join(still)}")

    def _layout(self) -> None:
        for sub in ("etc", "state", "spool", "log", "run", "munge"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # munged requires the socket directory to be traversable by everyone; the work tree may
        # sit under a 0700 pytest directory, so the socket goes to a short private dir if needed.
        sock = self.workdir / "munge" / "munge.socket"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            self._short_dir = Path(tempfile.mkdtemp(prefix="lslurm-"))
            sock = self._short_dir / "munge.socket"
        self.munge_socket = sock
        os.chmod(self.workdir / "munge", 0o755)

    def _write_env(self, path: str) -> None:
        # Wrappers for the SLURM client commands that default SLURM_CONF to this cluster's file.
        # Needed because snakemake-executor-plugin-slurm-jobstep removes every SLURM_* variable
        # (SLURM_CONF included) before its nested `srun` inside the job; on a real cluster that srun
        # finds /etc/slurm/slurm.conf (or configless slurmd), which LocalSlurm must not touch.
        bindir = self.workdir / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for cmd in SLURM_CLIENT_COMMANDS:
            real = _which(cmd, path)
            if real is None:
                continue
            wrapper = bindir / cmd
            wrapper.write_text(
                "#!/bin/sh\n"
                "# LocalSlurm (tests/slurm_cluster.py): use the test cluster unless SLURM_CONF is set\n"
                f'SLURM_CONF="${{SLURM_CONF:-{self.conf}}}"\n'
                "export SLURM_CONF\n"
                f'exec {real} "$@"\n'
            )
            wrapper.chmod(0o755)
        path = os.pathsep.join([str(bindir), path])
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        self.env_overrides = {"SLURM_CONF": str(self.conf), "PATH": path}
        self.env = {**base, **self.env_overrides}
        # munge clients (munge/unmunge) don't read SLURM_CONF; pass the socket explicitly.
        self._munge_args = ["--socket", str(self.munge_socket)]

    # ------------------------------------------------------------------ munge
    def _start_munged(self) -> None:
        mdir = self.workdir / "munge"
        key = mdir / "munge.key"
        # A private key: 1 KiB of random bytes, mode 0400. munged insists that the key is owned by
        # the uid it runs as (root here), so it is NOT chowned to the 'munge' user (that owner is
        # only right for the system key /etc/munge/munge.key used by a munged running as 'munge').
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        pidfile = mdir / "munged.pid"
        logfile = self.log_dir / "munged.log"
        cmd = [
            "munged", "--force",
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={pidfile}",
            f"--log-file={logfile}",
            f"--seed-file={mdir / 'munged.seed'}",
        ]
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise SlurmUnavailable(f"munged failed to start: {res.stderr.strip()}\n{_tail(logfile)}")
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError, ValueError):
            self._munged_pid = int(pidfile.read_text().strip())
        cred = subprocess.run(["munge", *self._munge_args, "-n"], env=self.env, capture_output=True, timeout=15)
        check = subprocess.run(
            ["unmunge", *self._munge_args], input=cred.stdout, env=self.env, capture_output=True, timeout=15
        )
        if cred.returncode != 0 or check.returncode != 0:
            raise SlurmUnavailable(
                "munge -n | unmunge failed: "
                f"{(cred.stderr or b'').decode(errors='replace')}{(check.stderr or b'').decode(errors='replace')}"
                f"\n{_tail(logfile)}"
            )

    # ------------------------------------------------------------------ slurm
    def _write_configs(self) -> None:
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        w = self.workdir
        gres_node = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines = [
            "# written by tests/slurm_cluster.py (LocalSlurm)",
            f"ClusterName=lslurm{self.ctld_port}",
            f"SlurmctldHost={self.node}",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            # finished jobs stay visible to `squeue --states=all` this long (see module docstring)
            "MinJobAge=300",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "MessageTimeout=20",
            f"StateSaveLocation={w / 'state'}",
            f"SlurmdSpoolDir={w / 'spool'}",
            f"SlurmctldPidFile={w / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={w / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={w / 'etc' / 'plugstack.conf'}",
            *(["GresTypes=gpu"] if self.gpus else []),
            f"NodeName={self.node} CPUs={self.cpus} RealMemory={self.memory_mb}{gres_node} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
        self.conf.write_text("\n".join(lines))
        (w / "etc" / "cgroup.conf").write_text("CgroupPlugin=autodetect\nConstrainCores=no\nConstrainRAMSpace=no\n")
        (w / "etc" / "plugstack.conf").write_text("")  # no SPANK plugins from /etc/slurm/plugstack.conf.d
        if self.gpus:
            (w / "etc" / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu Count={self.gpus} File=/dev/null\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.log_dir / f"{name}.stdout", "ab")
        try:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise SlurmUnavailable(f"cannot start {name}: {exc}") from exc
        finally:
            out.close()
        self._procs.append((name, proc))

    def _start_slurm(self) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        deadline = time.monotonic() + min(self.timeout, 30)
        while time.monotonic() < deadline:
            self._check_alive()
            if self.run("scontrol", "ping", check=False, timeout=15).stdout.find("UP") >= 0:
                break
            time.sleep(0.5)
        else:
            raise SlurmUnavailable(f"slurmctld did not answer `scontrol ping`\n{_tail(self.log_dir / 'slurmctld.log')}")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{name} exited with code {proc.returncode}\n{_tail(self.log_dir / f'{name}.log')}\n"
                    f"{_tail(self.log_dir / f'{name}.stdout')}"
                )

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.node_state()
            if state in ("idle", "mix", "alloc"):
                return
            if state.startswith(("drain", "drng", "down", "inval", "fail")) and "*" not in state:
                reason = self.run("sinfo", "-h", "-R", "-o", "%E", check=False).stdout.strip()
                raise SlurmUnavailable(f"node {self.node} is {state}: {reason}\n{_tail(self.log_dir / 'slurmd.log')}")
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"node {self.node} not idle after {self.timeout:.0f} s (state: {state!r})\n"
            f"{_tail(self.log_dir / 'slurmctld.log')}\n{_tail(self.log_dir / 'slurmd.log')}"
        )

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Cancel remaining jobs, stop slurmd, slurmctld and munged (only the processes started here)."""
        if not self._started:
            return
        self._started = False
        if self._procs and all(p.poll() is None for _, p in self._procs):
            with contextlib.suppress(Exception):
                jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=15).stdout.split()
                if jobs:
                    self.run("scancel", *jobs, check=False, timeout=15)
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and self.run(
                        "squeue", "-h", "-t", "PD,R,CG", "-o", "%i", check=False, timeout=15
                    ).stdout.strip():
                        time.sleep(0.5)
        # slurmd first (it must not outlive the controller's view), then slurmctld
        for name, proc in reversed(self._procs):
            self._terminate(proc)
        self._procs.clear()
        if self._munged_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._munged_pid, signal.SIGTERM)
            for _ in range(50):
                try:
                    os.kill(self._munged_pid, 0)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self._munged_pid, signal.SIGKILL)
            self._munged_pid = None
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    @staticmethod
    def _terminate(proc: subprocess.Popen, grace: float = 15) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------- snakemake helpers
#: Node size that fits every request in profiles/slurm (generate: 1 GPU, 8 CPUs per GPU, 32 GB).
PROFILE_NODE = {"cpus": 16, "memory_mb": 65536, "gpus": 1}

#: Profiles for a run on a LocalSlurm: the real cluster profile plus the no-accounting overrides.
#: The workstation profile (profiles/default) is excluded explicitly; as a workflow profile it would
#: override default-resources of the cluster profile.
SLURM_PROFILE_ARGS = (
    "--workflow-profile", "none",
    "--profile", str(REPO_ROOT / "profiles" / "slurm"),
    "--profile", str(REPO_ROOT / "profiles" / "slurm-local"),
    "--executor", "slurm",
)


def snakemake_slurm_command(snakefile, workdir, *extra_args: str, python: str | None = None) -> list[str]:
    """The snakemake command line used to run ``snakefile`` in ``workdir`` through LocalSlurm."""
    return [
        python or sys.executable, "-m", "snakemake",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        *SLURM_PROFILE_ARGS,
        *extra_args,
    ]


def run_snakemake_on_slurm(
    cluster: LocalSlurm,
    snakefile,
    workdir,
    *extra_args: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run snakemake through ``cluster`` (cwd = ``workdir``); stdout+stderr captured in ``.stdout``.

    Does not raise on a non-zero exit; use :func:`describe_failure` for an assertion message.
    """
    cmd = snakemake_slurm_command(snakefile, workdir, *extra_args)
    env = {**cluster.env, **(extra_env or {})}
    return subprocess.run(
        cmd, cwd=str(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )


def describe_failure(cluster: LocalSlurm, result: subprocess.CompletedProcess, workdir=None) -> str:
    """Snakemake output tail, SLURM job logs and daemon log tails, for assertion messages."""
    parts = [f"command: {' '.join(map(str, result.args))}", f"exit code: {result.returncode}",
             "--- snakemake output (tail) ---", "\n".join((result.stdout or "").splitlines()[-80:])]
    if workdir is not None:
        for log in sorted(Path(workdir, ".snakemake", "slurm_logs").rglob("*.log"))[:10]:
            parts.append(_tail(log, 30))
    parts.append(cluster.run("squeue", "--states=all", "-o", "%i %j %T %R", check=False).stdout)
    parts.append(_tail(cluster.log_dir / "slurmctld.log", 15))
    parts.append(_tail(cluster.log_dir / "slurmd.log", 15))
    return "\n".join(parts)
