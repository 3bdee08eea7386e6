"""A real single-node Slurm (Debian's munged, slurmctld, slurmd) for tests, under one state dir.

Fake GPUs through gres (`File=` symlinks to /dev/null: Slurm accepts those as devices and sets
CUDA_VISIBLE_DEVICES). No slurmdbd: `sacct` says accounting is disabled and `sacct -c` reads the
jobcomp file, which is what a cluster without accounting looks like. Ports are picked free, so
several clusters (several test sessions) can run side by side.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.common import (
    ServiceError,
    all_pids,
    free_ports,
    pid_alive,
    proc_environ,
    read_pid,
    require_binaries,
    run_quiet,
    stop_pid,
    tail,
    wait_until,
)

DAEMONS = ("munged", "slurmctld", "slurmd")
PORT_ATTEMPTS = 3  # picked ports are free when picked, not when the daemons bind them


@dataclass
class SlurmCluster:
    state_dir: Path
    partition: str = "debug"
    gpus: int = 2  # fake GPUs on the one node ("gpu:2")
    cpus: int = 8  # advertised CPUs (more than the machine has, so arrays run side by side)
    node: str = "localhost"
    conf: Path = field(init=False)
    started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.conf = self.state_dir / "etc" / "slurm.conf"

    # --------------------------------------------------------------------------- what tests use
    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm client commands (sbatch, squeue, …): os.environ + SLURM_CONF."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def gres(self) -> str:
        return f"gpu:{self.gpus}"

    def run(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return run_quiet(list(argv), env=self.env, timeout_s=timeout_s)

    def logs(self) -> str:
        return "\n".join(f"{p}:\n{tail(p)}" for p in self._log_paths())

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id).stdout
        m = re.search(r"JobState=(\S+)", out)
        return m.group(1) if m else ""

    def wait_state(self, job_id: str, states: set[str], timeout_s: float = 60) -> str:
        wait_until(lambda: self.job_state(job_id) in states, timeout_s, f"job {job_id} in {sorted(states)}", self._log_paths(), 0.2)
        return self.job_state(job_id)

    # --------------------------------------------------------------------------- lifecycle
    def _log_paths(self) -> list[Path]:
        return [self.state_dir / "log" / f"{d}.log" for d in DAEMONS]

    def _pidfile(self, daemon: str) -> Path:
        return self.state_dir / "run" / f"{daemon}.pid"

    def _fail(self, what: str) -> ServiceError:
        return ServiceError(f"slurm test cluster in {self.state_dir}: {what}\n{self.logs()}")

    def start(self, timeout_s: float = 60) -> "SlurmCluster":
        require_binaries("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
        if os.geteuid() != 0:
            raise ServiceError("the slurm test cluster needs root (slurmd runs jobs as their users)")
        s = self.state_dir
        for sub in ("etc", "run", "log", "spool/ctld", "spool/d", "munge", "fakedev"):
            (s / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(s / "munge", 0o700)  # munged refuses a key dir others can read
        os.chmod(s / "run", 0o755)  # … and a socket dir others cannot traverse
        key = s / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = s / "run" / "munge.socket"
        self.started = True  # from here on, stop() has something to clean up
        self._daemon(
            ["munged", f"--key-file={key}", f"--socket={sock}", f"--pid-file={self._pidfile('munged')}",
             f"--log-file={s / 'log' / 'munged.log'}", f"--seed-file={s / 'munge' / 'munged.seed'}"],
            "munged",
        )
        wait_until(sock.exists, 10, "munge socket", self._log_paths())

        for i in range(self.gpus):
            link = s / "fakedev" / f"nvidia{i}"
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                self._start_slurm(sock, timeout_s)
                return self
            except ServiceError:
                if not self._lost_port_race():
                    raise
                self._stop_slurm_daemons()  # another process took a picked port: new ports, again
        self._start_slurm(sock, timeout_s)
        return self

    def _start_slurm(self, sock: Path, timeout_s: float) -> None:
        self._write_conf(sock)
        self._daemon(["slurmctld"], "slurmctld")
        self._daemon(["slurmd", "-N", self.node], "slurmd")

        def idle() -> bool:
            for d in DAEMONS:
                pid = read_pid(self._pidfile(d))
                if pid is None or not pid_alive(pid):
                    raise self._fail(f"{d} died")
            try:
                r = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", timeout_s=10)
            except subprocess.TimeoutExpired:  # it reached a port another process holds, which never answers:
                return False  # not up yet; slurmctld's death or its log's bind error says which (start retries)
            return r.stdout.strip() == "idle"

        wait_until(idle, timeout_s, "slurm node idle", self._log_paths(), 0.2)

    def _lost_port_race(self) -> bool:
        logs = [self.state_dir / "log" / f"{d}.log" for d in ("slurmctld", "slurmd")]
        return any("Address already in use" in p.read_text(errors="replace") for p in logs if p.exists())

    def _stop_slurm_daemons(self) -> None:
        for d in ("slurmd", "slurmctld"):
            pid = read_pid(self._pidfile(d))
            if pid:
                stop_pid(pid, 10)
            self._pidfile(d).unlink(missing_ok=True)
        for d in ("slurmd", "slurmctld"):  # the next attempt's race check reads fresh logs
            (self.state_dir / "log" / f"{d}.log").unlink(missing_ok=True)

    def _daemon(self, argv: list[str], name: str) -> None:
        # the daemons fork and write their PID file from the child
        r = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise self._fail(f"{name} exited {r.returncode}: {r.stderr.strip()}")
        pf = self._pidfile(name)
        wait_until(lambda: (pid := read_pid(pf)) is not None and pid_alive(pid), 10, f"{name} PID file", self._log_paths())

    def _write_conf(self, sock: Path) -> None:
        s = self.state_dir
        hw = run_quiet(["slurmd", "-C"]).stdout.split("\n")[0]
        mem = int(re.search(r"RealMemory=(\d+)", hw).group(1)) * 9 // 10 if "RealMemory=" in hw else 1024
        ctld_port, slurmd_port = free_ports(2)  # distinct: the CI run where both got one port failed
        gres_node = ""
        if self.gpus:
            (s / "etc" / "gres.conf").write_text(
                "AutoDetect=off\n"
                f"NodeName={self.node} Name=gpu File={s}/fakedev/nvidia[0-{self.gpus - 1}]\n"
            )
            gres_node = f"Gres=gpu:{self.gpus}"
        lines = [
            "ClusterName=golfruntest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={sock}",
            f"StateSaveLocation={s}/spool/ctld",
            f"SlurmdSpoolDir={s}/spool/d",
            f"SlurmctldPidFile={self._pidfile('slurmctld')}",
            f"SlurmdPidFile={self._pidfile('slurmd')}",
            f"SlurmctldLogFile={s}/log/slurmctld.log",
            f"SlurmdLogFile={s}/log/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # the default proctrack/cgroup makes every batch job fail on this kind of host
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={s}/log/jobcomp.txt",
            "SchedulerType=sched/backfill",
            # the default batch_sched_delay makes each dependency hop ~3 s instead of ~1 s
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "GresTypes=gpu" if self.gpus else "",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "MinJobAge=600",
            "SlurmdTimeout=300",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} {gres_node} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("# generated by tests/services/slurm.py\n" + "\n".join(l for l in lines if l) + "\n")

    def stop(self) -> None:
        """Cancel every job, stop the daemons by PID, then any leftover step or job process."""
        if not self.started:
            return
        conf = str(self.conf)
        ctld, slurmd = read_pid(self._pidfile("slurmctld")), read_pid(self._pidfile("slurmd"))
        if ctld and slurmd and pid_alive(ctld) and pid_alive(slurmd):
            try:
                ids = self.run("squeue", "-h", "-o", "%A", timeout_s=10).stdout.split()
                if ids:
                    self.run("scancel", *ids, timeout_s=10)
                    end = time.monotonic() + 20
                    while time.monotonic() < end and self.run("squeue", "-h", "-o", "%A", timeout_s=10).stdout.strip():
                        time.sleep(0.2)
            except subprocess.TimeoutExpired:
                pass
        if slurmd:
            stop_pid(slurmd, 10)
        # slurmstepd outlives slurmd (its parent is init) and so can the job's processes
        me = os.getpid()
        for pid in all_pids():
            if pid == me:
                continue
            env = proc_environ(pid)
            if env.get("SLURM_CONF") == conf and (
                "SLURM_JOB_ID" in env or _comm(pid) == "slurmstepd"
            ):
                stop_pid(pid, 2)
        for d in ("slurmctld", "munged"):
            pid = read_pid(self._pidfile(d))
            if pid:
                stop_pid(pid, 10)
        self.started = False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
