"""A real single-node SLURM cluster on localhost, for tests: munged, slurmctld and slurmd started
from Debian's packages with a configuration in a temporary folder, stopped by the PIDs they wrote.
With `nodes=2` it is a two-node cluster on this one machine (see TwoNodeNetwork): each slurmd runs
with its own hostname, and the second in its own network namespace, so multi-node launches are real
cross-"node" TCP connections.

No systemd here, so the daemons are started directly. Settings that keep Snakemake from hanging:
`EnforcePartLimits=ALL` makes sbatch refuse a job larger than the node (instead of pending forever),
and a long `MinJobAge` keeps finished jobs visible to `squeue`, the status command used without
slurmdbd (where `sacct` exists but fails). Two fake GPUs are GRES backed by character devices
(made with mknod), so SLURM sets CUDA_VISIBLE_DEVICES in GPU jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, Workdir, fake_apptainer, snakemake_env
from processes import PATIENCE, run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(
        self, root: Path, cpus: int = 2, memory_mb: int = 8000, gpus: int = 2, nodes: int = 1
    ):
        if nodes not in (1, 2):
            raise ValueError(f"the test cluster has 1 or 2 nodes, not {nodes}")
        self.root = root
        self.cpus, self.memory_mb, self.gpus = cpus, memory_mb, gpus
        self.network = TwoNodeNetwork(root) if nodes == 2 else None
        self.controller = socket.gethostname().split(".")[0]
        self.nodes = self.network.nodes if self.network else {self.controller: "127.0.0.1"}
        self.node = next(iter(self.nodes))  # the first node, where batch scripts run
        self.conf = root / "slurm.conf"
        self.pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        """Client environment: SLURM_CONF, and bin/ first on PATH for the srun shim (see
        write_config)."""
        return {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }

    def missing_programs(self) -> list[str]:
        needed = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel"]
        if self.network:
            needed += ["ip", "unshare", "nsenter", "mount"]
        return [p for p in needed if shutil.which(p) is None]

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
                os.mknod(
                    device, 0o666 | stat.S_IFCHR, os.makedev(1, 3)
                )  # a character device, like /dev/null
        r = self.root
        node_lines = "\n".join(
            f"NodeName={name} NodeAddr={address} CPUs={self.cpus} RealMemory={self.memory_mb} "
            f"Gres=gpu:{self.gpus} State=UNKNOWN"
            for name, address in self.nodes.items()
        )
        self.conf.write_text(f"""\
ClusterName=amberci
SlurmctldHost={self.controller}({self.nodes[self.node]})
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.%n.log
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
{node_lines}
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        # snakemake-executor-plugin-slurm-jobstep removes every SLURM_* variable, SLURM_CONF
        # included, before its nested `srun`; a real cluster's config sits at /etc/slurm, ours does
        # not. This shim gives srun our config back (and only srun: the tests' sbatch/squeue get
        # SLURM_CONF).
        (r / "bin").mkdir(exist_ok=True)
        shim = r / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        shim.chmod(0o755)
        gpu_files = f"{r}/dev/nvidia[0-{self.gpus - 1}]"
        (self.root / "gres.conf").write_text(
            "AutoDetect=off\n"
            + "".join(f"NodeName={name} Name=gpu File={gpu_files}\n" for name in self.nodes)
        )

    def start(self, timeout: float = PATIENCE) -> None:
        """Start the daemons; if one fails, stop those already running before raising."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        missing = self.missing_programs()
        if missing:
            raise RuntimeError(
                f"SLURM test cluster: {', '.join(missing)} not installed "
                "(apt-get install --no-install-recommends "
                "slurmctld slurmd slurm-client munge iproute2)"
            )
        self.write_config()
        r = self.root
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={r}/munge/munge.socket",
                f"--key-file={r}/munge/munge.key",
                f"--pid-file={r}/munge/munged.pid",
                f"--log-file={r}/munge/munged.log",
                f"--seed-file={r}/munge/munged.seed",
            ],
            check=True,
        )
        self.pids["munged"] = self._wait_for_pid(r / "munge" / "munged.pid", timeout)
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env)
        self.pids["slurmctld"] = self._wait_for_pid(r / "slurmctld.pid", timeout)
        if self.network:
            self.network.create()
        for name in self.nodes:
            (r / "spool" / name).mkdir(parents=True, exist_ok=True)
            slurmd = ["slurmd", "-f", str(self.conf)]
            subprocess.run(
                self.network.on_node(name, slurmd) if self.network else slurmd,
                check=True,
                env=self.env,
            )
            self.pids[f"slurmd {name}"] = self._wait_for_pid(r / f"slurmd.{name}.pid", timeout)
        deadline = time.monotonic() + timeout
        while set(self.node_states()) - {"idle", "mixed", "allocated"}:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nodes not idle after {timeout} s: {self.node_states()!r}\n{self.logs()}"
                )
            time.sleep(0.2)

    def node_states(self) -> list[str]:
        result = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=self.env
        )
        return [state.rstrip("*~#") for state in result.stdout.split()] or ["no nodes"]

    def _wait_for_pid(self, path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} not written within {timeout} s\n{self.logs()}")
            time.sleep(0.05)
        return int(path.read_text().split()[0])

    def logs(self) -> str:
        parts = []
        for name in (
            "slurmctld.log",
            *(f"slurmd.{node}.log" for node in self.nodes),
            "munge/munged.log",
        ):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop only the daemons this object started, newest first, by their PIDs; then the
        network."""
        for name in reversed(list(self.pids)):
            pid = self.pids.pop(name)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.network:
            self.network.remove()


def slurm_snakemake(workdir: Workdir, cluster: LocalSlurm, *args: str, wait=True):
    """Snakemake with the repository's slurm profile; test overrides for this one-node cluster."""
    command = [
        sys.executable,
        str(Path(__file__).with_name("slurm_polling.py")),  # Snakemake, polling SLURM every 2 s
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir.path),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(workdir.path / "config" / "config.yaml"),  # the embedded default, not the 7B recipe
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=500",
        "runtime=30",
        "--slurm-status-command",
        "squeue",  # no slurmdbd here: sacct exists but fails
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--jobs",
        "2",
        "--latency-wait",
        "5",
        "--verbose",
        *args,
    ]
    # The profile runs GPU rules in Apptainer, which is not installable here: a stand-in records the
    # calls and runs the inner command on the host (see tests/fake_apptainer.py), on a placeholder
    # image.
    fake_bin = workdir.path / "fake-bin"
    fake_apptainer(fake_bin, workdir.path / "apptainer-calls.jsonl")
    image = workdir.path / workdir.config["container"]["image"]
    image.parent.mkdir(parents=True, exist_ok=True)
    image.touch()
    env = snakemake_env()
    # Run from the working directory, as users do: Snakemake expands the profile's $PWD (in its
    # apptainer-args bind) from the environment when it reads the profile.
    env["PWD"] = str(workdir.path)
    env.update(
        SLURM_CONF=cluster.env["SLURM_CONF"],
        PATH=f"{cluster.root / 'bin'}{os.pathsep}{fake_bin}{os.pathsep}{env['PATH']}",
    )
    if not wait:
        return subprocess.Popen(  # its own process group: processes.stop ends it and its jobs
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=workdir.path,
            start_new_session=True,
        )
    result = run(command, env=env, cwd=workdir.path, snakemake_dir=workdir.path)
    assert result.returncode == 0, (
        f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}\n{cluster.logs()}"
    )
    return result


def sbatch_calls(output: str) -> dict[str, str]:
    """{rule: sbatch command line} from Snakemake's verbose output."""
    calls = {}
    for call in re.findall(r"sbatch call: (.*)", output):
        rule = re.search(r"--comment '?rule_([a-z_]+?)(?:_wildcards_[^' ]*)?'? ", call + " ")
        calls[rule.group(1)] = call
    return calls


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


class TwoNodeNetwork:
    """Two "nodes" on one machine: node1 keeps this machine's network, node2 gets its own network
    namespace joined to it by a veth pair. Each slurmd runs in its own UTS and mount namespace, with
    its node name as hostname and a private /etc/hosts naming both nodes, so hostnames resolve to
    addresses the other node can reach (this machine's own name resolves to 127.0.0.1). Jobs inherit
    all of this from their slurmd. Needs root, `ip` and `unshare`.
    """

    def __init__(self, root: Path):
        tag = os.getpid() % 200 + 20  # distinct names and subnet per test process
        self.namespace, self.link = f"amber-node2-{tag}", f"amber{tag}"
        self.nodes = {"node1": f"10.{tag}.77.1", "node2": f"10.{tag}.77.2"}
        self.hosts = root / "hosts"
        self.created = False

    def create(self) -> None:
        original = Path("/etc/hosts").read_text()
        self.hosts.write_text(
            original + "".join(f"{address} {name}\n" for name, address in self.nodes.items())
        )
        node1, node2 = self.nodes.values()
        for command in (
            f"ip netns add {self.namespace}",
            f"ip link add {self.link} type veth peer name {self.link} netns {self.namespace}",
            f"ip addr add {node1}/24 dev {self.link}",
            f"ip link set {self.link} up",
            f"ip -n {self.namespace} addr add {node2}/24 dev {self.link}",
            f"ip -n {self.namespace} link set {self.link} up",
            f"ip -n {self.namespace} link set lo up",
        ):
            subprocess.run(command.split(), check=True, capture_output=True)
            self.created = True  # from the first step on, so remove() undoes a partial set-up

    def on_node(self, name: str, command: list[str]) -> list[str]:
        """`command` run as on node `name`: its hostname, its /etc/hosts and, for node2, its
        network."""
        inner = f'hostname {name} && mount --bind {self.hosts} /etc/hosts && exec "$@"'
        prefix = ["nsenter", f"--net=/run/netns/{self.namespace}"] if name == "node2" else []
        return [*prefix, "unshare", "--uts", "--mount", "sh", "-c", inner, "sh", *command]

    def remove(self) -> None:
        if self.created:
            subprocess.run(["ip", "link", "del", self.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
            self.created = False
