"""Malformed campaign files and --set values give errors that name the file, key and value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from golfrun.campaign import load_campaign
from golfrun.errors import CampaignError


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error(spec: str | None, overrides: list[str] | None = None) -> str:
    with pytest.raises(CampaignError) as err:
        load_campaign(spec, overrides or [])
    return str(err.value)


def test_minimal_file_takes_defaults(tmp_path: Path) -> None:
    c = load_campaign(write(tmp_path, 'name = "mine"\n'))
    assert c.name == "mine" and c.gate_a.bpb_tolerance == 0.003 and c.gate_b.alpha == 0.01
    assert c.ablation.variants == [] and c.backend.kind == "local"


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [gate_a]
        bpb_tolerence = 0.01
    """)
    msg = error(path)
    assert msg.startswith(path + ":")
    assert "unknown key 'gate_a.bpb_tolerence'" in msg
    assert "valid keys in [gate_a]: seed, bpb_tolerance, artifact_cap_bytes" in msg
    assert "did you mean 'bpb_tolerance'" in msg


def test_unknown_top_level_and_nested_keys(tmp_path: Path) -> None:
    assert "unknown key 'gate_c'" in error(write(tmp_path, "[gate_c]\nx = 1\n"))
    msg = error(write(tmp_path, "[backend.slurm.container]\nimage = 'x'\nmount = []\n"))
    assert "unknown key 'backend.slurm.container.mount'" in msg and "image, mounts, workdir" in msg
    msg = error(write(tmp_path, "[[ablation.variants]]\nname = 'a'\nenvv = {}\n"))
    assert "unknown key 'ablation.variants[0].envv'" in msg and "name, env, mode, description" in msg


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[gate_a]\nbpb_tolerance = '0.01'", "gate_a.bpb_tolerance: expected a number, got string \"0.01\""),
        ("[gate_a]\nseed = 1.5", "gate_a.seed: expected an integer, got float 1.5"),
        ("[gate_a]\nseed = true", "gate_a.seed: expected an integer, got boolean true"),
        ("[gate_b]\nrequire_record = 1", "gate_b.require_record: expected true or false, got integer 1"),
        ("[gate_b]\nseeds = 3", "gate_b.seeds: expected a list of integers, got integer 3"),
        ("[gate_b]\nseeds = [0, 'x']", "gate_b.seeds[1]: expected an integer, got string \"x\""),
        ("gate_a = 3", "gate_a: expected a table, got integer 3"),
        ("[trainer_env]\nA = [1]", "trainer_env.A: expected a string, got list [1]"),
        ("[backend]\nkind = 'pbs'", "backend.kind: 'pbs' is not one of 'local', 'slurm', 'runpod'"),
        ("[backend.local]\nnproc_per_node = 0", "backend.local.nproc_per_node: must be >= 1, got 0"),
        ("[data]\nsource = 'http://x'", "data.source: 'http://x' is not valid"),
        ("[backend.slurm]\ntime = { gate-a = 'an hour' }", "backend.slurm.time.gate-a: 'an hour' is not valid"),
        ("[backend.slurm]\ntime = { gate_x = 30 }", "backend.slurm.time: unknown key 'gate_x'; valid keys: default, verify-pod"),
        ("[backend.slurm]\nssh = 'user@host:port'", "backend.slurm.ssh: 'user@host:port' is not valid"),
        ("[backend.runpod]\nports = ['22']", "backend.runpod.ports[0]: '22' is not valid"),
        ("[preserve]\ntargets = ['s3://bucket']", "preserve.targets[0]: 's3://bucket' is not valid"),
        ("[trainer_env]\nHF_TOKEN = 'hf_abc'", "trainer_env.HF_TOKEN: looks like a secret"),
        ("[trainer_env]\n'1BAD' = 'x'", "trainer_env: '1BAD' is not a valid environment variable name"),
        ("name = 'a b'", "name: 'a b' is not valid"),
    ],
)
def test_wrong_values(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml + "\n")
    msg = error(path)
    assert msg.startswith(path + ": ")
    assert expected in msg


def test_env_tables_turn_scalars_into_strings(tmp_path: Path) -> None:
    c = load_campaign(write(tmp_path, "[trainer_env]\nA = 3\nB = 0.5\nC = true\nD = false\nTRAIN_BATCH_TOKENS = 8192\n"))
    assert c.trainer_env == {"A": "3", "B": "0.5", "C": "1", "D": "0", "TRAIN_BATCH_TOKENS": "8192"}


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[reference]\nseeds = [0, 1]\nval_bpb = [1.0]", "reference.val_bpb has 1 values but reference.seeds has 2"),
        ("[reference]\nseeds = [1, 2]\nval_bpb = [1.0, 1.1]", "gate_a.seed 0 has no reference value"),
        ("[ablation]\npromote_delta_bpb = -0.001\nhold_delta_bpb = -0.002", "must be <= ablation.hold_delta_bpb"),
        ("[[ablation.variants]]\nname = 'a'\n[[ablation.variants]]\nname = 'a'", "duplicate ablation variant names: a"),
        ("[[ablation.variants]]\nenv = {A = '1'}", "every [[ablation.variants]] needs a name"),
        ("[gate_b]\nseeds = [1, 1]", "gate_b.seeds must be a non-empty list of distinct seeds"),
        ("[data]\nvariant = 'sp1024'", "data.variant 'sp1024' does not match data.synthetic.vocab_size 512"),
        ("[trainer_env]\nVOCAB_SIZE = 1024", "trainer_env.VOCAB_SIZE '1024' does not match data.variant 'sp512'"),
        ("[backend.runpod]\nvolume_gb = 5", "backend.runpod.volume_gb 5: RunPod needs at least 10"),
        ("[backend.runpod]\nvolume_gb = 20\nnetwork_volume_id = 'v1'", "exclude each other"),
        ("[backend.runpod]\nenv = { PUBLIC_KEY = 'ssh-ed25519 x' }", "env.PUBLIC_KEY is set by golfrun"),
        ("[backend.runpod]\nworkdir = 'golfrun'", "backend.runpod.workdir: 'golfrun' is not valid"),
    ],
)
def test_rules_across_keys(tmp_path: Path, toml: str, expected: str) -> None:
    assert expected in error(write(tmp_path, toml + "\n"))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name = \n")
    msg = error(path)
    assert msg.startswith(path) and "invalid TOML" in msg
    assert "campaign file not found" in error(str(tmp_path / "nope.toml"))
    assert "neither a campaign file nor a preset; presets: gpu1, pr1610, tiny" in error("huge")


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "campaigns"
    sub.mkdir()
    path = write(sub, 'trainer = "../trainers/t.py"\n[data]\ndir = "data"\n')
    c = load_campaign(path)
    assert c.trainer == (tmp_path / "trainers/t.py").resolve()
    assert c.data.dir == str((sub / "data").resolve())
    assert c.data_dir(tmp_path / "runs/x") == sub / "data"
    absolute = write(sub, f'trainer = "{tmp_path}/abs.py"\n', "abs.toml")
    c = load_campaign(absolute)
    assert c.trainer == tmp_path / "abs.py" and c.data.dir == ""
    assert c.data_dir(tmp_path / "runs/x") == tmp_path / "runs/x/data"


def test_set_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_campaign(None, [
        "gate_a.bpb_tolerance=0.01",
        'preserve.targets=["hf:o/r"]',
        "name=exp1",
        'gate_b.seeds=[0, 1, 2, 3]',
        "trainer_env.NUM_LAYERS=8",
        "trainer_env.NEW_FLAG=on",
        "verify_pod.git_commit=1234567",
        "gate_b.require_record=true",
        "backend.slurm.time.gate-a=01:30:00",
        "backend.slurm.time.default=45",
        "data.dir=mydata",
        "trainer=other/train.py",
        'ablation.variants=[{name = "x", env = {A = 1}}]',
        'name="quoted"',
    ])
    assert c.gate_a.bpb_tolerance == 0.01
    assert c.preserve.targets == ["hf:o/r"]
    assert c.name == "quoted"  # later overrides win
    assert c.gate_b.seeds == [0, 1, 2, 3]
    assert c.trainer_env["NUM_LAYERS"] == "8" and c.trainer_env["NEW_FLAG"] == "on"
    assert c.trainer_env["VOCAB_SIZE"] == "512"  # the rest of the table is kept
    assert c.verify_pod.git_commit == "1234567"
    assert c.gate_b.require_record is True
    assert c.backend.slurm.time == {"gate-a": "01:30:00", "default": 45}
    assert c.data.dir == str(tmp_path / "mydata")  # --set paths: against the current directory
    assert c.trainer == tmp_path / "other/train.py"
    assert [(v.name, v.env) for v in c.ablation.variants] == [("x", {"A": "1"})]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("gate_a.bpb_tolerance", "--set gate_a.bpb_tolerance: expected section.key=value"),
        ("=3", "--set =3: expected section.key=value, got key ''"),
        ("gate_a..seed=3", "expected section.key=value, got key 'gate_a..seed'"),
        ("gate_a.bpb_tolerence=0.01", "--set gate_a.bpb_tolerence=0.01: unknown key 'gate_a.bpb_tolerence'; valid keys in [gate_a]: seed, bpb_tolerance"),
        ("gate_c.x=1", "unknown key 'gate_c.x'; valid keys in the top level: name, trainer, trainer_env, usd_per_gpu_hour, backend"),
        ("gate_a.bpb_tolerance=abc", "--set gate_a.bpb_tolerance=abc: 'abc' is not a TOML value"),
        ("gate_a.bpb_tolerance=\"0.1\"", "--set gate_a.bpb_tolerance=\"0.1\": gate_a.bpb_tolerance: expected a number, got string \"0.1\""),
        ("gate_b.seeds=[0, 1", "is not a TOML value"),
        ("gate_a.seed=1\nname=2", "is not a single TOML value"),
        ("gate_a=3", "'gate_a' is a table; set one of its keys, e.g. gate_a.seed="),
        ("gate_a.seed.x=3", "'gate_a.seed' is not a table"),
        ("backend.kind=pbs", "--set backend.kind=pbs: backend.kind: 'pbs' is not one of"),
        ("trainer_env.HF_TOKEN=x", "trainer_env.HF_TOKEN: looks like a secret"),
        ("backend.slurm.time.gate-x=30", "backend.slurm.time: unknown key 'gate-x'"),
        ("ablation.variants=[{nme = \"x\"}]", "unknown key 'ablation.variants[0].nme'"),
        ("gate_b.seeds=[]", "gate_b.seeds must be a non-empty list"),
    ],
)
def test_set_bad(override: str, expected: str) -> None:
    assert expected in error(None, [override])


def test_section_and_to_dict() -> None:
    c = load_campaign("pr1610")
    assert c.section("gate_a")["bpb_tolerance"] == 0.003
    assert c.section("backend.slurm")["gpus_per_node"] == 8
    assert c.section("trainer") == {"trainer": str(c.trainer)}
    assert "source" not in c.to_dict()
    with pytest.raises(CampaignError, match="no campaign section 'gate_z'"):
        c.section("gate_z")
    assert c.variant("1b").env["CORRECTOR_ORDERS"] == "5,8,12"
    assert c.variant_mode(c.variant("1b")) == "eval_only_quantized"
    with pytest.raises(CampaignError, match="no ablation variant '9'.*1a, 1b, 1c"):
        c.variant("9")


def test_to_toml_round_trip_of_an_edited_campaign(tmp_path: Path) -> None:
    c = load_campaign("pr1610", [
        'backend.slurm.extra_sbatch=["--reservation=golf"]',
        'backend.slurm.setup=["module load cuda/12.8", "source \\"/opt/venv x/bin/activate\\""]',
        "backend.runpod.env.WANDB_MODE=offline",
        'ablation.variants=[{name = "q", env = {A = "x y"}, mode = "train", description = "a \\"quoted\\" text"}]',
        "name=edited",
    ])
    path = tmp_path / "again.toml"
    path.write_text(c.to_toml())
    assert load_campaign(str(path)) == c
