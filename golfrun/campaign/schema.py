"""The campaign schema: one frozen dataclass per TOML table, one line per key.

Each key is declared with `key(default, doc, **rules)`: its Python type annotation is the type the
TOML value must have, `doc` is what docs/campaign.md says about it, and the rules (`choices`, `ge`,
`gt`, `le`, `pattern`, `item_pattern`, `keys`) are checked by the loader (`load.py`). Nested tables
are dataclass-typed fields; `[[ablation.variants]]` is a list of `Variant`.

Types a key may have: str, int, float (an integer is accepted), bool, Path (a string in TOML;
relative paths resolve against the campaign file's folder), list[str|int|float], dict[str, str]
(environment tables: int, float and bool values are turned into strings — true → "1"), dict[str,
str | int], a section dataclass, list[Variant].
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from golfrun.summary import STAGES

# Key-name patterns shared by rules.
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SLURM_TIME = r"(\d+-)?\d+(:\d{1,2}){0,2}"  # minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
SLURM_TIME_KEYS = ("default", *STAGES)


def key(default: Any, doc: str, **rules: Any) -> Any:
    """A schema key: default value, one-line documentation, validation rules."""
    meta = {"doc": doc, **rules}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """A nested table."""
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


# ---------------------------------------------------------------------------------------------
# [backend.*]


@dataclass(frozen=True)
class LocalBackend:
    nproc_per_node: int = key(1, "processes per job; > 1 runs `torchrun --standalone --nproc_per_node=N`", ge=1)
    python: str = key("", "interpreter for the trainer; \"\" = the one running golfrun")


@dataclass(frozen=True)
class SlurmContainer:
    image: str = key("", "pyxis `--container-image` (e.g. \"nvcr.io#nvidia/pytorch:25.03-py3\"); \"\" = no container")
    mounts: list[str] = key([], "pyxis `--container-mounts` entries, each \"SRC:DST[:FLAGS]\"", item_pattern=r"[^,\s]+:[^,\s]+")
    workdir: str = key("", "pyxis `--container-workdir`; \"\" = the job's working directory")


@dataclass(frozen=True)
class SlurmBackend:
    partition: str = key("", "`--partition`; \"\" = the cluster's default")
    account: str = key("", "`--account`; \"\" = none")
    qos: str = key("", "`--qos`; \"\" = none")
    time: dict[str, str | int] = key(
        {},
        "time limit per stage: a table stage → \"HH:MM:SS\" (any Slurm time format) or minutes; "
        "key \"default\" for the others; a stage with no entry gets no `--time`",
        keys=SLURM_TIME_KEYS,
        item_pattern=_SLURM_TIME,
    )
    nodes: int = key(1, "`--nodes` per trainer job", ge=1)
    gpus_per_node: int = key(0, "`--gpus-per-node`; 0 = request no GPUs", ge=0)
    cpus_per_task: int = key(0, "`--cpus-per-task`; 0 = the cluster's default", ge=0)
    mem: str = key("", "`--mem` (e.g. \"400G\"; \"0\" = all of the node's memory); \"\" = the cluster's default",
                   pattern=r"(\d+[KMGT]?)?")
    constraint: str = key("", "`--constraint` (node features); \"\" = none")
    exclusive: bool = key(False, "`--exclusive`: whole nodes")
    extra_sbatch: list[str] = key([], "extra sbatch options, one per item, e.g. \"--reservation=golf\"",
                                  item_pattern=r"-[^\n]+")
    setup: list[str] = key([], "shell lines run before golfrun in every job (module load, venv activation)",
                           item_pattern=r"[^\n]*")
    container: SlurmContainer = section(SlurmContainer, "a pyxis container for every job")
    array_throttle: int = key(0, "at most this many tasks of a job array run at once (`%N`); 0 = no limit", ge=0)
    ssh: str = key("", "login node \"user@host[:port]\" to submit over SSH; \"\" = submit locally "
                       "(`--ssh` on the command line wins)", pattern=r"([^@\s:]+@)?[^@\s:]+(:\d+)?|")
    remote_dir: str = key("", "work directory on the cluster (code, campaign, runs); \"\" = the backend's default")
    known_hosts: str = key("", "known_hosts file for the login node's host key; \"\" = ~/.ssh/known_hosts")


@dataclass(frozen=True)
class RunpodBackend:
    gpu_type: str = key("NVIDIA H100 80GB HBM3", "RunPod GPU type id (`gpu.id`)")
    gpu_count: int = key(1, "GPUs in the pod; 0 = a CPU pod", ge=0)
    cloud_type: str = key("SECURE", "RunPod cloud", choices=("SECURE", "COMMUNITY"))
    image: str = key("runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04", "container image")
    container_disk_gb: int = key(50, "container disk (wiped on stop)", ge=1)
    volume_gb: int = key(0, "pod volume (host-local persistent disk, at least 10); 0 = none", ge=0)
    volume_mount_path: str = key("/workspace", "where the volume or network volume is mounted")
    network_volume_id: str = key("", "network volume to mount instead of a pod volume (not both); \"\" = none")
    data_center_ids: list[str] = key([], "allowed data centers (enforced by RunPod); [] = any")
    ports: list[str] = key([], "exposed ports \"<n>/http|tcp\"; \"22/tcp\" is always added", item_pattern=r"\d+/(http|tcp)")
    env: dict[str, str] = key({}, "environment of the pod (no secrets: see forward_env; PUBLIC_KEY is golfrun's)",
                              keys_pattern=_ENV_NAME)
    forward_env: list[str] = key(["HF_TOKEN"], "names of variables copied from golfrun's environment into the pod "
                                               "when set (secrets travel this way, never through the campaign file)",
                                 item_pattern=_ENV_NAME)
    workdir: str = key("/workspace/golfrun", "work directory inside the pod (absolute)", pattern=r"/.*")
    setup: list[str] = key([], "shell lines run in the pod before golfrun", item_pattern=r"[^\n]*")
    deadline_minutes: int = key(120, "the pod is terminated after this long, whatever happens", gt=0)
    budget_usd: float = key(0.0, "stop when the pod's cost reaches this; 0 = no cap beyond the deadline", ge=0)
    interruptible: bool = key(False, "ask for a spot (interruptible) pod")
    max_rerolls: int = key(2, "a pod that never boots or that verify-pod finds slow or wrong (preflight, GPUs, "
                              "disk) is terminated and another created, at most this many times; each pod's cost is "
                              "kept in pod.json", ge=0)
    max_usd_per_hour: float = key(0.0, "a created pod whose rate is above this is terminated at once, before anything "
                                       "runs on it; 0 = no cap", ge=0)
    data_volume_gb: int = key(0, "stage the challenge data on a network volume of this size: found by name (one per "
                                 "data source and variant) or created in the first of data_center_ids, mounted at "
                                 "volume_mount_path, data.dir put on it, so later pods reuse it (docs/runpod.md); "
                                 "0 = the data lives on each pod's disk", ge=0)

    def all_ports(self) -> list[str]:
        return self.ports if "22/tcp" in self.ports else [*self.ports, "22/tcp"]


@dataclass(frozen=True)
class Backend:
    kind: str = key("local", "where trainer jobs run (`--backend` on the command line wins)",
                    choices=("local", "slurm", "runpod"))
    local: LocalBackend = section(LocalBackend, "the local backend: subprocess or torchrun")
    slurm: SlurmBackend = section(SlurmBackend, "the Slurm backend: sbatch, locally or over SSH")
    runpod: RunpodBackend = section(RunpodBackend, "the RunPod backend: a pod created through the REST API")


# ---------------------------------------------------------------------------------------------
# stages


@dataclass(frozen=True)
class VerifyPod:
    gpu_count: int = key(0, "exact number of GPUs expected; 0 = none needed (CPU is fine)", ge=0)
    gpu_name: str = key("", "substring every GPU's name must contain (e.g. \"H100\"); \"\" = any")
    gpu_form_factor: str = key("", "form factor every GPU must have (an H100 PCIe or NVL is not the SXM part the "
                                   "records ran on); \"\" = any", choices=("", "SXM", "PCIe", "NVL"))
    torch_version: str = key("", "prefix torch.__version__ must start with; \"\" = any")
    cuda_version: str = key("", "prefix torch.version.cuda must start with; \"\" = any")
    attention_backend: str = key("", "attention backend the trainer must get (e.g. \"fa3\"); \"\" = any")
    required_packages: list[str] = key(["torch", "numpy", "sentencepiece", "brotli"], "importable modules")
    min_free_disk_gb: float = key(1.0, "free disk in the runs folder", ge=0)
    git_commit: str = key("", "commit the checkout must contain; \"\" = no pin", pattern=r"[0-9a-fA-F]{4,40}|")
    git_pin: str = key("ancestor", "how git_commit is checked: contained in HEAD's history, or HEAD itself",
                       choices=("ancestor", "exact"))
    preflight: str = key("auto", "the preflight benchmark (bf16 matmul, NCCL all-reduce, host-to-device copy, "
                                 "attention forward+backward, data read speed; docs/pipeline.md): \"auto\" = when "
                                 "gpu_count > 0, \"on\", \"off\"", choices=("auto", "on", "off"))
    min_perf_fraction: float = key(0.8, "a preflight figure below this fraction of what golfrun/preflight_expected.py "
                                        "expects of the GPU model is a KILL", gt=0, le=1)


@dataclass(frozen=True)
class Synthetic:
    vocab_size: int = key(512, "SentencePiece vocabulary (data.variant must be sp<vocab_size>)", ge=262, le=65536)
    train_docs: int = key(4000, "generated train documents", ge=1)
    val_docs: int = key(400, "generated val documents (the first ones)", ge=1)
    seed: int = key(1234, "seed of the document generator")


@dataclass(frozen=True)
class Data:
    source: str = key("synthetic", "\"synthetic\" (built locally) or \"hf:<owner>/<repo>\" (a Hugging Face dataset repo)",
                      pattern=r"synthetic|hf:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
    revision: str = key("", "Hub revision (branch, tag or commit) for hf: sources; \"\" = main")
    remote_prefix: str = key("datasets", "folder of the export inside the Hub repo")
    variant: str = key("sp512", "tokenizer family: \"sp<V>\" or \"byte260\"", pattern=r"sp\d+|byte260")
    train_shards: int = key(2, "train shards to download (hf:) or to write (synthetic)", ge=1)
    dir: str = key("", "data folder; \"\" = runs/<campaign>/data; relative = against the campaign file's folder",
                   path=True)
    min_free_disk_gb: float = key(1.0, "free disk needed before downloading", ge=0)
    synthetic: Synthetic = section(Synthetic, "the generated dataset (source = \"synthetic\")")


@dataclass(frozen=True)
class Reference:
    name: str = key("", "what is being reproduced (e.g. \"PR #1610\")")
    seeds: list[int] = key([0, 1, 2], "the seeds of the published runs")
    val_loss: list[float] = key([], "published val_loss per seed (nats), in the order of seeds")
    val_bpb: list[float] = key([], "published val_bpb per seed, in the order of seeds")
    artifact_bytes: list[int] = key([], "published artifact size per seed (code + compressed model)")


@dataclass(frozen=True)
class GateA:
    seed: int = key(0, "the seed trained and evaluated (must be one of reference.seeds)")
    bpb_tolerance: float = key(0.003, "PASS iff val_bpb <= the reference val_bpb of that seed + tolerance")
    artifact_cap_bytes: int = key(16_000_000, "the competition's cap on code + compressed model bytes", gt=0)
    artifact_headroom_bytes: int = key(0, "extra safety margin under the cap: a warning when eaten into, never a failure", ge=0)
    max_train_seconds: float = key(600.0, "training wall-clock cap (train_time_ms / 1000)", gt=0)
    max_eval_seconds: float = key(600.0, "cap on the final evaluation's time", gt=0)
    env: dict[str, str] = key({}, "environment for gate-a's job only (on top of trainer_env)", keys_pattern=_ENV_NAME)


@dataclass(frozen=True)
class Variant:
    name: str = key("", "the variant's name (a folder name: letters, digits, . _ -)", pattern=r"[A-Za-z0-9._-]+")
    env: dict[str, str] = key({}, "environment overrides that make the variant", keys_pattern=_ENV_NAME)
    mode: str = key("", "\"\" = ablation.mode, else as ablation.mode for this variant only",
                    choices=("", "eval_only", "eval_only_quantized", "train"))
    description: str = key("", "free text for humans")


ABLATION_MODES = ("eval_only", "eval_only_quantized", "train")


@dataclass(frozen=True)
class Ablation:
    mode: str = key(
        "eval_only",
        "eval_only: gate-a's final_model.pt re-quantized and evaluated with the variant's env "
        "(EVAL_ONLY_PATH); eval_only_quantized: gate-a's .ptz evaluated (EVAL_ONLY_QUANTIZED_PATH; only "
        "eval-time settings matter); train: a full train per variant",
        choices=ABLATION_MODES,
    )
    promote_delta_bpb: float = key(-0.002, "delta_bpb = variant − baseline; best delta <= this → PROMOTE")
    hold_delta_bpb: float = key(-0.001, "promote < best delta <= hold → HOLD (a person decides); above → KILL")
    variants: list[Variant] = key([], "[[ablation.variants]]: name, env, mode, description")
    halving_fractions: list[float] = key([], "successive halving: eval-only variants are first scored on these "
                                             "fractions of the validation documents (increasing, each in (0, 1)), "
                                             "the better part going on each time; survivors get the full set; "
                                             "[] = every variant on the full set")
    halving_keep: float = key(0.5, "the part of the variants that goes on from each rung (at least one)", gt=0, le=1)
    halving_doc_seed: int = key(0, "VAL_DOC_SEED of the rungs: which documents the fractions are (the same for "
                                    "every variant and the baseline)", ge=0)
    halving_rule: str = key("rank", "who goes on from a rung: rank = the halving_keep part with the lowest deltas; "
                                    "paired = every variant not confidently worse than the rung's best, by a "
                                    "one-sided Wilcoxon signed-rank test on their per-chunk deltas (the trainer's "
                                    "VAL_CHUNKS sums, halving_chunks of them) at halving_alpha",
                            choices=("rank", "paired"))
    halving_alpha: float = key(0.05, "paired rule: a variant is dropped when the test's p-value that it is worse "
                                     "than the rung's best is below this", gt=0, le=0.5)
    halving_chunks: int = key(32, "paired rule: VAL_CHUNKS of the rungs, the chunks of documents compared pair by "
                                   "pair (at least 6: with n chunks the smallest one-sided p-value is 2^-n)", ge=6)
    abort_at_steps: list[int] = key([], "learning-curve early abort of trained variants: at each of these training "
                                        "steps (increasing, > 0) a variant whose train loss is above gate-a's at "
                                        "that step by more than abort_margin_nats is stopped and recorded ABORTED "
                                        "(never promoted; its GPU time up to there is in the ledger); [] = off")
    abort_margin_nats: float = key(0.1, "how far above gate-a's train loss (nats) at a check step counts as "
                                        "trailing; one batch's loss is noisy, so keep it above that noise", gt=0)


@dataclass(frozen=True)
class GateB:
    seeds: list[int] = key([0, 1, 2], "seeds run with the promoted variant, in this order (pre-registered: a "
                                      "sequential gate-b takes the first max_seeds of them, wave by wave)")
    mean_tolerance_bpb: float = key(0.002, "PASS iff mean val_bpb <= reference mean val_bpb + tolerance")
    rule: str = key("record", "the seed test (docs/gates.md): record = mean val_loss below the reference's by "
                              "record_margin_nats at p < alpha (one-sided Welch); frontier = below the reference "
                              "at p < 0.25 (Welch, no margin); target = below target_val_loss at p < alpha "
                              "(one-sample t)", choices=("record", "frontier", "target"))
    record_margin_nats: float = key(0.005, "the record rule: mean val_loss improves on the reference by at least this …", ge=0)
    alpha: float = key(0.01, "… at p < alpha, one-sided, on per-seed val_loss (record and target rules)", gt=0, le=0.5)
    target_val_loss: float = key(0.0, "the target rule: the mean val_loss (nats) to beat; required when rule = \"target\"", ge=0)
    extra_reference_val_loss: list[float] = key([], "more per-seed reference val_loss values from other runs (a "
                                                    "third-party reproduction), pooled with reference.val_loss")
    extra_reference_label: str = key("", "where extra_reference_val_loss comes from (required with it), "
                                         "shown in the summary")
    require_record: bool = key(False, "true: failing the rule's test is a KILL (else it is reported only); "
                                      "a sequential gate-b (wave_size > 0) needs true")
    wave_size: int = key(0, "seeds per wave: after each wave (from 2 seeds on) the test decides PASS, KILL or "
                            "another wave; 0 = all seeds in one wave (the fixed design)", ge=0)
    max_seeds: int = key(0, "at most this many of gate_b.seeds are run; 0 = all of them", ge=0)
    futility_power: float = key(0.1, "a wave stops for futility when the chance of passing by max_seeds (conditional "
                                     "power under the current trend) is below this; 0 = never", ge=0, le=0.5)


@dataclass(frozen=True)
class Submission:
    name: str = key("", "submission title (submission.json name, README title); \"\" = the campaign name")
    author: str = key("", "display name for submission.json")
    github_id: str = key("", "GitHub username for submission.json")
    track: str = key("10min_16mb", "records/track_<track>/ and submission.json track",
                     choices=("10min_16mb", "non_record_16mb"))
    hardware: str = key("", "e.g. \"8xH100 80GB SXM\"; \"\" = from the runs' results.json and provenance")
    blurb: str = key("", "one to three sentences on what changed")
    base_pr: int = key(0, "the PR this submission builds on; 0 = none", ge=0)
    based_on: str = key("", "the base record's name for submission.json and the README; \"\" = reference.name")
    technique_summary: str = key("", "what changed against the base record, for submission.json and the README")
    attribution: dict[str, str] = key({}, "credits: technique → \"@user (PR #n)\" (submission.json attribution, README Credits)")


@dataclass(frozen=True)
class Preserve:
    targets: list[str] = key(
        [],
        "where the preserve bundle goes: \"dir:<path>\" (relative: inside runs/<campaign>/), \"hf:<owner>/<repo>[@rev][/path]\" (model repo), "
        "\"hf-dataset:<owner>/<repo>[@rev][/path]\", \"rsync:[user@]host[:port]:<path>\", "
        "\"sftp:[user@]host[:port]:<path>\"; [] = only the stage folder (docs/preserve.md)",
        item_pattern=r"dir:.+|hf(-model|-dataset)?:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(@[^/\s]+)?(/\S*)?"
                     r"|(rsync|sftp):([^@:/\s]+@)?[^@:/\s]+(:\d+)?:.+",
    )
    include_checkpoints: bool = key(True, "put final_model.pt and .ptz in the tarball")
    hf_private: bool = key(True, "Hub repos that golfrun creates are private")
    ssh_identity_file: str = key("", "private key file for rsync:/sftp: targets (its path; \"\" = ssh's defaults)")
    known_hosts: str = key("", "known_hosts file for rsync:/sftp: targets; \"\" = ~/.ssh/known_hosts (never auto-accepted)")
    submission: Submission = section(Submission, "`golfrun package`: the competition submission folder")


@dataclass(frozen=True)
class CompileCache:
    enabled: bool = key(True, "share one torch.compile cache (Inductor, Triton, FX and autograd graphs) among the "
                              "campaign's trainer jobs; false = every job compiles from scratch (docs/cost.md)")
    dir: str = key("", "the cache's root; \"\" = runs/<campaign>/compile-cache (on Slurm the shared file system, "
                       "on RunPod the pod's disk); a subfolder per trainer/torch/CUDA/GPU key")


@dataclass(frozen=True)
class Budget:
    usd: float = key(0.0, "money the whole campaign may spend, on any backend: a stage whose planned jobs would pass it "
                          "(spent + its estimate, golfrun/budget.py) is not started, exit 4; needs a price "
                          "(usd_per_gpu_hour or the RunPod pod's rate) to estimate; 0 = no limit", ge=0)
    gpu_hours: float = key(0.0, "device-hours the whole campaign may hold (GPU-hours; process-hours on a CPU-only "
                                "run), held the same way; 0 = no limit", ge=0)


@dataclass(frozen=True)
class Timeouts:
    gate_a_s: float = key(0.0, "deadline of each gate-a job in seconds, then it is cancelled and the stage is ERROR; "
                               "0 = 1.5 × (gate_a.max_train_seconds + gate_a.max_eval_seconds) + 900", ge=0)
    ablation_s: float = key(0.0, "deadline of each ablation job in seconds; 0 = as gate_a_s's default", ge=0)
    gate_b_s: float = key(0.0, "deadline of each gate-b job in seconds; 0 = as gate_a_s's default", ge=0)
    stall_s: float = key(1200.0, "a job that prints no line and shows no GPU activity (nvidia-smi utilization, where "
                                 "there is one) for this many seconds is stopped: ERROR with its log's tail; 0 = never",
                         ge=0)


# ---------------------------------------------------------------------------------------------
# the root


@dataclass(frozen=True)
class CampaignFields:
    """The root table. `Campaign` (load.py) adds the methods and where the campaign came from."""

    name: str = key("tiny", "campaign name: runs/<name>/", pattern=r"[A-Za-z0-9._-]+")
    trainer: Path = key(Path("train_gpt.py"), "the trainer script; relative = against the campaign file's folder "
                                             "(for presets: the repository's train_gpt.py)", path=True)
    trainer_env: dict[str, str] = key({}, "environment applied to every trainer job", keys_pattern=_ENV_NAME)
    usd_per_gpu_hour: float = key(0.0, "price of one GPU-hour for the cost ledger (`golfrun status`); 0 = unknown "
                                       "(on RunPod the pod's own rate is used)", ge=0)
    backend: Backend = section(Backend, "where trainer jobs run")
    verify_pod: VerifyPod = section(VerifyPod, "stage 00: what the machine must offer")
    data: Data = section(Data, "stage 01: the dataset")
    reference: Reference = section(Reference, "the published record being reproduced")
    gate_a: GateA = section(GateA, "stage 02: reproduce one seed")
    ablation: Ablation = section(Ablation, "stage 03: screen variants against gate-a's checkpoint")
    gate_b: GateB = section(GateB, "stage 04: confirm the promoted variant across seeds")
    preserve: Preserve = section(Preserve, "stage 05: keep everything")
    compile_cache: CompileCache = section(CompileCache, "one torch.compile cache shared by the campaign's jobs")
    budget: Budget = section(Budget, "money and device-time the whole campaign may use (`golfrun spend` shows them)")
    timeouts: Timeouts = section(Timeouts, "when a trainer job is given up: per-stage deadlines, the stall detector")


SECTION_TYPES: tuple[type, ...] = (
    LocalBackend, SlurmContainer, SlurmBackend, RunpodBackend, Backend, VerifyPod, Synthetic, Data,
    Reference, GateA, Variant, Ablation, GateB, Submission, Preserve, CompileCache, Budget, Timeouts,
    CampaignFields,
)


def iter_keys(cls: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every key of a section and its subsections, depth first: (dotted name, field, default)."""
    out: list[tuple[str, Any, Any]] = []
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        dotted = f"{prefix}{f.name}"
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append((dotted, f, default))
        if f.metadata.get("section"):
            out.extend(iter_keys(type(default), dotted + "."))
    return out
