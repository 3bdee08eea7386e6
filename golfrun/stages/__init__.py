"""The six stages, one module each, in the order of `golfrun.summary.STAGES`. Each module has
`run(ctx: StageContext) -> Summary`, a header docstring stating its pass/kill rule, and `SPEC`: the
facts about it (golfrun/stages/spec.py) that the engine, the views, the CLI and the Slurm chain read.

The registry imports the stage modules on first use, not on `import golfrun.stages`.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from golfrun.errors import GolfrunError
from golfrun.stages.spec import StageSpec
from golfrun.summary import STAGES

# stage name → its module; one line per stage
MODULES: dict[str, str] = {
    "verify-pod": "golfrun.stages.verify_pod",
    "download-data": "golfrun.stages.download_data",
    "gate-a": "golfrun.stages.gate_a",
    "ablation": "golfrun.stages.ablation",
    "gate-b": "golfrun.stages.gate_b",
    "preserve": "golfrun.stages.preserve",
}


def module(stage: str) -> ModuleType:
    if stage not in MODULES:
        raise GolfrunError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(MODULES[stage])


@functools.cache
def specs() -> dict[str, StageSpec]:
    """Every stage's SPEC, in order; a module whose SPEC disagrees with its name or place is an error."""
    found: dict[str, StageSpec] = {}
    for number, name in enumerate(STAGES):
        spec = module(name).SPEC
        if spec.name != name or spec.number != number:
            raise GolfrunError(f"{MODULES[name]}.SPEC says {spec.name!r} number {spec.number}; "
                               f"the order says {name!r} number {number}")
        found[name] = spec
    return found


def spec(stage: str) -> StageSpec:
    if stage not in MODULES:
        raise GolfrunError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return specs()[stage]
