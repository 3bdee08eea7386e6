"""Rank wrapper for trainer tasks started by `srun`: maps Slurm's task variables to the ones
torch.distributed reads, then execs the trainer. Standard library only, and runnable as a plain
file (`python .../srun_rank.py -- python train_gpt.py`), so it works inside a container that has
no golfrun installed as long as the folder is mounted.

RANK ← SLURM_PROCID, LOCAL_RANK ← SLURM_LOCALID, WORLD_SIZE ← SLURM_NTASKS,
LOCAL_WORLD_SIZE ← tasks on this node, NODE_RANK ← SLURM_NODEID,
MASTER_ADDR ← kept if set (golfrun's srun backend sets it), else the first host of the step's
node list (`scontrol show hostnames`), MASTER_PORT ← kept if set, else derived from the job id.
"""

from __future__ import annotations

import os
import subprocess
import sys


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("gpu[01-04],x" → "gpu01"); scontrol knows the syntax."""
    if not nodelist:
        return "127.0.0.1"
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
    hosts = out.stdout.split()
    if out.returncode != 0 or not hosts:
        raise SystemExit(f"srun_rank: scontrol show hostnames {nodelist!r} failed: {out.stderr.strip()}")
    return hosts[0]


def port_for(job_id: str) -> int:
    """A port that differs between jobs sharing a node (20000-29999)."""
    return 20000 + (int(job_id) % 10000 if job_id.isdigit() else 0)


def _local_world_size(env: dict[str, str]) -> str:
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    node = int(env.get("SLURM_NODEID", "0") or 0)
    counts: list[int] = []
    for part in per_node.split(","):  # "8(x2)" or "8,4"
        if not part:
            continue
        n, _, rep = part.partition("(x")
        counts += [int(n)] * (int(rep.rstrip(")")) if rep else 1)
    if node < len(counts):
        return str(counts[node])
    return env.get("SLURM_NTASKS", "1")


def rank_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out["RANK"] = env.get("SLURM_PROCID", "0")
    out["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    out["WORLD_SIZE"] = env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))
    out["LOCAL_WORLD_SIZE"] = _local_world_size(env)
    out["NODE_RANK"] = env.get("SLURM_NODEID", "0")
    if not env.get("MASTER_ADDR"):
        out["MASTER_ADDR"] = first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
    if not env.get("MASTER_PORT"):
        out["MASTER_PORT"] = str(port_for(env.get("SLURM_JOB_ID", "")))
    return out


def torchrun_argv(env: dict[str, str], nproc_per_node: int, python: str, script_and_args: list[str]) -> list[str]:
    """One torchrun per node (one srun task per node): torchrun starts the node's processes and
    sets their rank variables itself; this node's rank and the rendezvous come from Slurm."""
    return [
        python, "-m", "torch.distributed.run",
        f"--nnodes={env.get('SLURM_NNODES', env.get('SLURM_JOB_NUM_NODES', '1'))}",
        f"--node_rank={env.get('SLURM_NODEID', '0')}",
        f"--nproc_per_node={nproc_per_node}",
        f"--master_addr={env['MASTER_ADDR']}",
        f"--master_port={env['MASTER_PORT']}",
        *script_and_args,
    ]


def main(argv: list[str]) -> None:
    """`srun_rank.py -- PROGRAM ARGS` (one task per process) or
    `srun_rank.py --torchrun N -- PYTHON SCRIPT ARGS` (one task per node, N processes each)."""
    torchrun = 0
    if len(argv) >= 2 and argv[0] == "--torchrun":
        torchrun, argv = int(argv[1]), argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: srun_rank.py [--torchrun NPROC] -- PROGRAM [ARGS...]")
    env = rank_env(dict(os.environ))
    if torchrun:
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
            env.pop(name, None)  # torchrun sets these per process
        argv = torchrun_argv(env, torchrun, argv[0], argv[1:])
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
