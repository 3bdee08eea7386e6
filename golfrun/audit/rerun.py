"""`golfrun audit --causality`: rerun a finished run's scored evaluation twice and judge it
(docs/records.md "Causality"; the cut, the perturbation and the verdict are golfrun/audit/causality.py).

A job folder of golfrun's trainer holds what the rerun needs: `results.json` (the trainer's env as it
resolved it, the final score's label, the world size), the quantized model (`*.ptz`) and the score
dump of the final score (`SCORE_DUMP_PATH`). Both reruns are the trainer in its eval-only mode on that
model (`EVAL_ONLY_QUANTIZED_PATH`; with `TTT_ONLY_EVAL=1` when the final score is the TTT evaluation,
else with TTT and the sliding window off), each with its own dump: the control on the run's own data,
the other on a temporary DATA folder whose val shards are the perturbed copy (everything else
linked). They run here, through golfrun/transport/local.py, each with a deadline: on a GPU machine,
run `golfrun audit --causality` there. Two full evaluations: the audit costs about two eval times.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golfrun.audit.causality import Scores, Tolerance, choose_cut, judge, later_targets, perturb_stream
from golfrun.audit.rules import Finding
from golfrun.errors import CausalityError, TrainerResultError
from golfrun.fileio import sha256_file
from golfrun.summary import STAGE_DIRS

DEFAULT_EVAL_TIMEOUT_S = 1800.0  # per rerun: the 600 s evaluation plus loading and compiling
# The trainer names a rerun needs it to read (a records folder's own script reads none of them).
NEEDED_ENV = ("SCORE_DUMP_PATH", "EVAL_ONLY_QUANTIZED_PATH", "TTT_ONLY_EVAL", "DATA_DIR", "ARTIFACT_DIR")
# The run's own values of these name its files or its mode; the reruns set their own.
_RUN_SPECIFIC = ("DATA_DIR", "ARTIFACT_DIR", "RUN_ID", "SCORE_DUMP_PATH", "EVAL_ONLY_PATH",
                 "EVAL_ONLY_QUANTIZED_PATH", "TTT_ONLY_EVAL")
DIAGNOSTIC_LABEL = "diagnostic quantized"


@dataclass(frozen=True)
class RerunPlan:
    folder: Path
    trainer: Path
    model: Path  # the quantized model the run scored
    dump: Path  # the run's dump of its final score
    label: str  # the final score's label
    env: dict[str, str]  # the run's trainer env, less _RUN_SPECIFIC
    data_dir: Path
    vocab_size: int
    seq_len: int
    world_size: int
    seed: int | None


def plan_rerun(target: Path, trainer: Path | None = None, data_dir: Path | None = None) -> RerunPlan:
    """What the reruns need, found in the job folder; CausalityError names the first thing missing."""
    from golfrun.trainer.results import RESULTS_FILE, read_results_json

    folder = Path(target).expanduser().resolve()
    _refuse_other_targets(folder)
    if not (folder / RESULTS_FILE).is_file():
        raise CausalityError(f"{folder}: no {RESULTS_FILE}: --causality reruns a finished run of golfrun's "
                             "trainer (a job folder it wrote)")
    res = read_results_json(folder / RESULTS_FILE)
    if res.final is None:
        raise CausalityError(f"{folder / RESULTS_FILE}: no final score: nothing was scored to rerun")
    hp = res.hyperparameters
    script = _trainer_of(folder, trainer)
    vocab, seq_len = _int(hp, "VOCAB_SIZE", folder), _int(hp, "EVAL_SEQ_LEN", folder)
    if float(hp.get("VAL_DOC_FRACTION", 1.0) or 1.0) < 1.0:
        raise CausalityError(f"{folder / RESULTS_FILE}: VAL_DOC_FRACTION={hp['VAL_DOC_FRACTION']}: the run scored a "
                             "subset of the validation documents; --causality reruns full-split runs only")
    data = _data_dir(folder, hp, data_dir, vocab)
    return RerunPlan(folder, script, _model_of(folder, res.artifact.path if res.artifact else None),
                     _dump_of(folder, res.final.label), res.final.label, _run_env(hp), data, vocab, seq_len,
                     int(res.world_size or 1), res.seed)


def _refuse_other_targets(folder: Path) -> None:
    if not folder.is_dir():
        raise CausalityError(f"{folder}: not a folder: --causality takes one job folder of golfrun's trainer")
    if (folder / "campaign.resolved.toml").is_file():
        raise CausalityError(f"{folder}: a campaign folder: --causality reruns one job's evaluation twice; name a "
                             f"job folder, e.g. {folder / STAGE_DIRS['gate-a'] / 'jobs' / 'seed0'}")
    if (folder / "train_gpt.py").is_file() and (folder / "submission.json").is_file():
        raise CausalityError(f"{folder}: a records folder: its train_gpt.py is the record's own script, which "
                             "writes no score dump; run it as golfrun's trainer job, then audit that job folder")


def _trainer_of(folder: Path, given: Path | None) -> Path:
    """--trainer, else the job's own (job.json), else the campaign's; it must be the one that ran and
    read the names a rerun sets."""
    from golfrun.audit.report import campaign_trainer
    from golfrun.trainer.env_names import declared_env

    job = _job_json(folder)
    candidate = given or (Path(job["trainer"]) if isinstance(job.get("trainer"), str) else None) \
        or campaign_trainer(folder.parent.parent.parent)
    if candidate is None or not Path(candidate).is_file():
        raise CausalityError(f"{folder}: the trainer that ran is not here ({candidate or 'no job.json names it'}): "
                             "pass it with --trainer")
    candidate = Path(candidate).resolve()
    ran = job.get("trainer_sha256")
    if isinstance(ran, str) and sha256_file(candidate) != ran:
        raise CausalityError(f"{candidate}: not the trainer that ran this job (its sha256 differs from "
                             f"{folder / 'job.json'}'s trainer_sha256)")
    declared = declared_env(candidate.read_text(encoding="utf-8", errors="replace"))
    if declared is None:
        raise CausalityError(f"{candidate}: declares no _ENV_SPEC (a record's own script?): --causality needs "
                             "golfrun's trainer, which reads SCORE_DUMP_PATH")
    missing = [n for n in NEEDED_ENV if n not in declared.names]
    if missing:
        raise CausalityError(f"{candidate}: the trainer does not read {', '.join(missing)}: it cannot rerun "
                             "its evaluation with a score dump")
    return candidate


def _job_json(folder: Path) -> dict:
    try:
        data = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_of(folder: Path, recorded: str | None) -> Path:
    names = [Path(recorded).name] if recorded else []
    for path in [*(folder / n for n in names), *sorted(folder.glob("*.ptz"))]:
        if path.is_file():
            return path
    raise CausalityError(f"{folder}: no quantized model ({names[0] if names else '*.ptz'}): the rerun "
                         "evaluates the model the run scored")


def _dump_of(folder: Path, label: str) -> Path:
    from golfrun.audit.report import score_dump_for

    dump = score_dump_for(folder, label)
    if dump is None:
        raise CausalityError(f"{folder}: no score dump of the final score '{label}' (*.npz): run the trainer "
                             "with SCORE_DUMP_PATH set (a campaign: `--set trainer_env.SCORE_DUMP_PATH=scores.npz`, "
                             "which reruns the stage with a dump)")
    return dump


def _int(hp: dict, name: str, folder: Path) -> int:
    try:
        return int(hp[name])
    except (KeyError, TypeError, ValueError):
        raise CausalityError(f"{folder / 'results.json'}: hyperparameters.{name} missing or not an integer") from None


def _data_dir(folder: Path, hp: dict, given: Path | None, vocab: int) -> Path:
    from golfrun.data.layout import tokenizer_path, val_files

    if given is not None:
        data = Path(given).expanduser().resolve()
    else:  # the run's DATA_DIR; a relative one is the job folder's, where the trainer ran
        raw = Path(str(hp.get("DATA_DIR") or "./data/"))
        data = (raw if raw.is_absolute() else folder / raw).resolve()
    if not val_files(data, f"sp{vocab}"):
        raise CausalityError(f"{data}: no val shards of sp{vocab} (the run's DATA_DIR; pass the data with --data-dir)")
    if not tokenizer_path(data, f"sp{vocab}").is_file():
        raise CausalityError(f"{tokenizer_path(data, f'sp{vocab}')}: the run's tokenizer is missing (--data-dir)")
    return data


def _run_env(hp: dict) -> dict[str, str]:
    out = {}
    for name, value in hp.items():
        if name in _RUN_SPECIFIC or value is None:
            continue
        out[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out


# --------------------------------------------------------------------------- the two reruns


def audit_causality(plan: RerunPlan, timeout_s: float = DEFAULT_EVAL_TIMEOUT_S, tol: Tolerance = Tolerance(),
                    log: Callable[[str], None] = lambda message: None) -> Finding:
    """The control rerun, the perturbed rerun and the verdict (a `causality` Finding)."""
    from golfrun.data.layout import val_files

    shards = val_files(plan.data_dir, f"sp{plan.vocab_size}")
    stream, lengths = _val_stream(shards)
    original = load_scores(plan.dump)
    usable = ((stream.size - 1) // plan.seq_len) * plan.seq_len
    if usable != original.nll.size:
        raise CausalityError(f"{plan.dump}: {original.nll.size:,} targets, but the val shards under {plan.data_dir} "
                             f"give {usable:,}: not the data this run was scored on (pass it with --data-dir)")
    scored = ~np.isnan(original.nll)
    try:
        cut = choose_cut(original.step, scored, stream, plan.seq_len)
    except ValueError as exc:
        raise CausalityError(f"{plan.dump}: {exc}") from None
    changed = perturb_stream(stream, later_targets(original.step, scored, cut), plan.vocab_size)
    with tempfile.TemporaryDirectory(prefix="golfrun-causality-") as tmp:
        work = Path(tmp)
        log(f"causality: control evaluation (1 of 2) of {plan.model.name} on {plan.data_dir}")
        control = _evaluate(plan, plan.data_dir, work / "control", timeout_s)
        data = _perturbed_data(plan, shards, lengths, stream, changed, work / "data")
        log(f"causality: perturbed evaluation (2 of 2), every token scored from the cut {cut.describe()} on replaced")
        perturbed = _evaluate(plan, data, work / "perturbed", timeout_s)
    return judge(original, control, perturbed, cut, tol, plan.seed)


def load_scores(path: Path) -> Scores:
    try:
        with np.load(path) as d:
            nll = np.asarray(d["nll"], dtype=np.float64)
            step = np.asarray(d["step"], dtype=np.int64) if "step" in d.files else np.full(nll.size, -1, np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise TrainerResultError(f"{path}: not a score dump ({exc})") from exc
    return Scores(nll, step)


def _val_stream(shards: list[Path]) -> tuple[np.ndarray, list[int]]:
    """The val shards as the trainer concatenates them (sorted), and each shard's length."""
    from golfrun.data.shards import read_tokens

    parts = [np.asarray(read_tokens(s)) for s in shards]
    return np.concatenate(parts).astype(np.int64), [p.size for p in parts]


def _perturbed_data(plan: RerunPlan, shards: list[Path], lengths: list[int], stream: np.ndarray,
                    changed: np.ndarray, root: Path) -> Path:
    """A DATA folder: the changed val shards written, every other file of the run's data linked."""
    from golfrun.data.layout import dataset_dir
    from golfrun.data.shards import write_shard

    variant = f"sp{plan.vocab_size}"
    source, target = dataset_dir(plan.data_dir, variant), dataset_dir(root, variant)
    target.mkdir(parents=True)
    for entry in plan.data_dir.iterdir():
        if entry.name != "datasets":
            (root / entry.name).symlink_to(entry)
    written = set()
    start = 0
    for shard, length in zip(shards, lengths):
        if not np.array_equal(stream[start:start + length], changed[start:start + length]):
            write_shard(target / shard.name, changed[start:start + length])
            written.add(shard.name)
        start += length
    for entry in source.iterdir():
        if entry.name not in written:
            (target / entry.name).symlink_to(entry)
    return root


def _evaluate(plan: RerunPlan, data: Path, out: Path, timeout_s: float) -> Scores:
    """The trainer's eval-only mode on the run's model with `data`; its dump of the final score."""
    from golfrun.transport import local

    out.mkdir(parents=True)
    env = {**plan.env, "DATA_DIR": str(data), "ARTIFACT_DIR": str(out), "RUN_ID": f"causality-{out.name}",
           "SCORE_DUMP_PATH": str(out / "scores.npz"), "EVAL_ONLY_QUANTIZED_PATH": str(plan.model),
           "EVAL_ONLY_PATH": ""}
    if plan.label == DIAGNOSTIC_LABEL:  # the score that counts is the plain quantized evaluation
        env.update(TTT_ONLY_EVAL="0", TTT_ENABLED="0", SLIDING_WINDOW_ENABLED="0")
    else:  # the TTT evaluation, and nothing before it
        env["TTT_ONLY_EVAL"] = "1"
    argv = [sys.executable, str(plan.trainer)]
    if plan.world_size > 1:
        argv[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={plan.world_size}"]
    done = local.run(argv, cwd=out, env=env, timeout_s=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).rstrip().splitlines()[-10:])
        raise TrainerResultError(f"causality: the {out.name} evaluation failed (exit {done.returncode}): "
                                 f"{' '.join(argv)}\n{tail}")
    dump = out / f"scores.{plan.label.replace(' ', '_')}.npz"
    if not dump.is_file():
        raise TrainerResultError(f"causality: the {out.name} evaluation wrote no dump of '{plan.label}' ({dump.name})")
    return load_scores(dump)
