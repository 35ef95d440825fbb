"""A real single-node SLURM cluster on localhost, for tests: munged, slurmctld and slurmd started from
Debian's packages with a configuration in a temporary folder, stopped by the PIDs they wrote.

No systemd here, so the daemons are started directly. Settings that keep Snakemake from hanging:
`EnforcePartLimits=ALL` makes sbatch refuse a job larger than the node (instead of pending forever),
and a long `MinJobAge` keeps finished jobs visible to `squeue`, the status command used without
slurmdbd (where `sacct` exists but fails). Two fake GPUs are GRES backed by character devices
(made with mknod), so SLURM sets CUDA_VISIBLE_DEVICES in GPU jobs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 8000, gpus: int = 2):
        self.root = root
        self.cpus, self.memory_mb, self.gpus = cpus, memory_mb, gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        """Client environment: SLURM_CONF, and bin/ first on PATH for the srun shim (see write_config)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def missing_programs(self) -> list[str]:
        return [p for p in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel") if shutil.which(p) is None]

    def write_config(self) -> None:
        for sub in ("state", "spool", "munge", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for index in range(self.gpus):
            device = self.root / "dev" / f"nvidia{index}"
            if not device.exists():
                os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a character device, like /dev/null
        r = self.root
        self.conf.write_text(f"""\
ClusterName=amberci
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
EnforcePartLimits=ALL
DefMemPerCPU=500
KillWait=5
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        # snakemake-executor-plugin-slurm-jobstep removes every SLURM_* variable, SLURM_CONF included,
        # before its nested `srun`; a real cluster's config sits at /etc/slurm, ours does not. This
        # shim gives srun our config back (and only srun: the tests' sbatch/squeue get SLURM_CONF).
        (r / "bin").mkdir(exist_ok=True)
        shim = r / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        shim.chmod(0o755)
        gpu_files = f"{r}/dev/nvidia[0-{self.gpus - 1}]"
        (self.root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu File={gpu_files}\n")

    def start(self, timeout: float = 60) -> None:
        missing = self.missing_programs()
        if missing:
            raise RuntimeError(f"SLURM test cluster: {', '.join(missing)} not installed "
                               "(apt-get install --no-install-recommends slurmctld slurmd slurm-client munge)")
        self.write_config()
        r = self.root
        subprocess.run(["munged", "--force", f"--socket={r}/munge/munge.socket", f"--key-file={r}/munge/munge.key",
                        f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log",
                        f"--seed-file={r}/munge/munged.seed"], check=True)
        self.pids["munged"] = self._wait_for_pid(r / "munge" / "munged.pid", timeout)
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env)
        self.pids["slurmctld"] = self._wait_for_pid(r / "slurmctld.pid", timeout)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=self.env)
        self.pids["slurmd"] = self._wait_for_pid(r / "slurmd.pid", timeout)
        deadline = time.monotonic() + timeout
        while self.node_state() not in ("idle", "mixed", "allocated"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node not idle after {timeout} s: {self.node_state()!r}\n{self.logs()}")
            time.sleep(0.2)

    def node_state(self) -> str:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=self.env)
        return result.stdout.strip().rstrip("*~#")

    def _wait_for_pid(self, path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} not written within {timeout} s\n{self.logs()}")
            time.sleep(0.05)
        return int(path.read_text().split()[0])

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop only the daemons this object started, newest first, by their PIDs."""
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
