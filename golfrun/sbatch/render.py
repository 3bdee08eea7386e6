"""Render sbatch scripts: plain data in (`SbatchSpec`), script text out. Pure functions, no I/O.

Only the campaign's `setup` and `extra_sbatch` lines are taken as the user wrote them (they are
shell and `#SBATCH` text by nature). Every other value is quoted: the command is an argv list
joined with shlex.quote, paths and names go through the same quoting.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jinja2

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Container:
    """A pyxis/enroot container for srun steps (`--container-image` etc.)."""

    image: str
    mounts: tuple[str, ...] = ()  # "src:dst[:flags]"
    workdir: str = ""

    def srun_flags(self) -> list[str]:
        flags = [f"--container-image={self.image}"]
        if self.mounts:
            flags.append(f"--container-mounts={','.join(self.mounts)}")
        if self.workdir:
            flags.append(f"--container-workdir={self.workdir}")
        return flags


@dataclass(frozen=True)
class SbatchSpec:
    job_name: str
    command: tuple[str, ...]  # argv of what the job runs
    workdir: str  # the job cds here first
    output: str  # --output path (Slurm patterns like %j, %A, %a allowed)
    error: str = ""  # "" = together with output
    description: str = ""
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = ""  # Slurm time ("35:00", "1-00:00:00"); "" = the partition's default
    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    mem: str = ""
    constraint: str = ""
    exclusive: bool = False
    array: str = ""  # "0-2" or "0,3,5"
    array_throttle: int = 0  # at most this many array tasks at once (0 = no limit)
    extra_sbatch: tuple[str, ...] = ()  # lines after "#SBATCH "
    setup: tuple[str, ...] = ()  # shell lines run before the command
    env: tuple[tuple[str, str], ...] = ()  # exported before the command
    container: Container | None = None  # trainer steps (srun) run in it
    srun_extra: tuple[str, ...] = field(default=())  # more srun flags for trainer steps


_PLAIN = re.compile(r"^[A-Za-z0-9_%@+=:,./#-]+$")


def sbatch_quote(value: str) -> str:
    """Quote a value for an `#SBATCH` line. sbatch reads those lines itself, not through a shell:
    it groups words with double quotes and takes a backslash as an escape (single quotes are
    literal characters there), so shlex.quote would be wrong."""
    if _PLAIN.match(value):
        return value
    if "\n" in value:
        raise ValueError(f"an #SBATCH value cannot hold a newline: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def directives(spec: SbatchSpec) -> list[str]:
    """The `#SBATCH` options (without the prefix), in a fixed order, every value quoted."""
    q = sbatch_quote
    out: list[str] = []
    if spec.partition:
        out.append(f"--partition={q(spec.partition)}")
    if spec.account:
        out.append(f"--account={q(spec.account)}")
    if spec.qos:
        out.append(f"--qos={q(spec.qos)}")
    if spec.time:
        out.append(f"--time={q(spec.time)}")
    out.append(f"--nodes={int(spec.nodes)}")
    out.append(f"--ntasks-per-node={int(spec.ntasks_per_node)}")
    if spec.gpus_per_node:
        out.append(f"--gpus-per-node={int(spec.gpus_per_node)}")
    if spec.cpus_per_task:
        out.append(f"--cpus-per-task={int(spec.cpus_per_task)}")
    if spec.mem:
        out.append(f"--mem={q(spec.mem)}")
    if spec.constraint:
        out.append(f"--constraint={q(spec.constraint)}")
    if spec.exclusive:
        out.append("--exclusive")
    if spec.array:
        throttle = f"%{int(spec.array_throttle)}" if spec.array_throttle else ""
        out.append(f"--array={q(spec.array + throttle)}")
    out.append(f"--output={q(spec.output)}")
    if spec.error:
        out.append(f"--error={q(spec.error)}")
    return out


def srun_step_flags(spec: SbatchSpec) -> list[str]:
    """srun flags for the trainer steps inside the job: the container, then any extra flags."""
    flags = spec.container.srun_flags() if spec.container else []
    return [*flags, *spec.srun_extra]


def command_line(spec: SbatchSpec) -> str:
    if not spec.command:
        raise ValueError(f"sbatch job {spec.job_name}: empty command")
    return shlex.join(spec.command)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("golfrun.sbatch", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def render_stage_script(spec: SbatchSpec) -> str:
    """The sbatch script for `spec`."""
    for line in (*spec.extra_sbatch, *spec.setup):
        if "\n" in line:
            raise ValueError(f"sbatch job {spec.job_name}: a set-up or extra #SBATCH line holds a newline: {line!r}")
    for k, _ in spec.env:
        if not _ENV_NAME.match(k):
            raise ValueError(f"sbatch job {spec.job_name}: {k!r} is not a valid environment variable name")
    step_flags = srun_step_flags(spec)
    return _TEMPLATES.get_template("stage.sh.j2").render(
        q=shlex.quote,
        sq=sbatch_quote,
        description=(spec.description or spec.job_name).replace("\n", " "),
        job_name=spec.job_name,
        directives=directives(spec),
        extra_sbatch=[l.removeprefix("#SBATCH").strip() for l in spec.extra_sbatch],
        setup=list(spec.setup),
        workdir=spec.workdir,
        env=list(spec.env),
        srun_args=step_flags,
        srun_args_json=json.dumps(step_flags),
        command=command_line(spec),
    )


def env_pairs(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in env.items())


def sbatch_argv(script_path: str, dependency: str = "", kill_on_invalid_dep: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """The sbatch command line for a rendered script; dependencies go here (ids are known only
    at submission)."""
    argv = ["sbatch", "--parsable"]
    if dependency:
        argv.append(f"--dependency={dependency}")
        if kill_on_invalid_dep:
            argv.append("--kill-on-invalid-dep=yes")
    return [*argv, *extra, script_path]
