"""download-data: synthetic data checked shard by shard, and the `hf:` source through the real
huggingface_hub client against the loopback Hub of tests/fixtures/hf_hub_server.py (the real Hub
cannot be reached from these machines; the server follows the routes the client calls)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.cli import main
from tests.fixtures.hf_hub_server import HubServer
from tests.fixtures.pipeline_campaign import write_campaign

REPO_ID = "golf/pg-data"


def run_stage(tmp: Path, *sets: str, force: bool = False) -> tuple[int, dict, str]:
    args = ["download-data", *(["--force"] if force else []), "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    path = tmp / "runs" / "t" / "01-download-data" / "summary.json"
    return result.exit_code, json.loads(path.read_text()) if path.exists() else {}, result.output


def test_every_shard_header_is_checked(tmp_path: Path) -> None:
    from golfrun.data.synthetic import build_dataset
    from golfrun.stages.download_data import _check_layout

    info = build_dataset(tmp_path / "data")
    with open(info.train_files[1], "r+b") as f:  # wrong magic
        f.write(b"\x00\x00\x00\x00")
    checks: list = []
    decision: dict = {}
    _check_layout(tmp_path / "data", "sp512", 2, checks, decision)
    check = next(c for c in checks if c.name == "shard_headers")
    assert not check.passed and "fineweb_train_000001.bin" in check.detail and "magic" in check.detail
    checks = []
    _check_layout(tmp_path / "data", "sp512", 3, checks, decision)
    assert not next(c for c in checks if c.name == "train_shards").passed


def test_synthetic_data_is_rebuilt_when_a_shard_is_damaged(tmp_path: Path) -> None:
    from golfrun.data.synthetic import build_dataset

    data = tmp_path / "data"
    info = build_dataset(data)
    write_campaign(tmp_path, data)
    code, summary, _ = run_stage(tmp_path)
    assert code == 0 and summary["decision"]["train_shards"] == 2
    with open(info.train_files[1], "r+b") as f:
        f.write(b"\x00\x00\x00\x00")
    result = CliRunner().invoke(main, ["download-data", "--force", "--campaign", str(tmp_path / "campaign.toml"),
                                       "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "rebuilding it" in result.output and "fineweb_train_000001.bin" in result.output  # said, not silent
    from golfrun.data.shards import check_shard

    assert check_shard(info.train_files[1]).magic == 20240520


def test_a_tokenizer_of_random_bytes_is_a_kill(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=hf_hub.endpoint).upload_file(
        path_or_fileobj=bytes(range(256)) * 16, path_in_repo="datasets/tokenizers/fineweb_512_bpe.model",
        repo_id=REPO_ID, repo_type="dataset")
    hf_campaign(tmp_path)
    code, summary, _ = run_stage(tmp_path)
    assert code == 10
    check = next(c for c in summary["checks"] if c["name"] == "tokenizer_vocab")
    assert not check["passed"] and "does not load" in str(check["observed"])


def test_a_tokenizer_of_another_vocabulary_is_a_kill(tmp_path: Path) -> None:
    from golfrun.data.synthetic import build_dataset
    from golfrun.stages.download_data import _check_layout

    data = tmp_path / "data"
    build_dataset(data)
    other = build_dataset(tmp_path / "other", vocab_size=1024)
    (data / "tokenizers" / "fineweb_512_bpe.model").write_bytes(other.tokenizer_path.read_bytes())
    checks: list = []
    _check_layout(data, "sp512", 2, checks, {})
    check = next(c for c in checks if c.name == "tokenizer_vocab")
    assert not check.passed and check.observed == 1024 and check.limit == 512


@pytest.fixture
def published(hf_hub: HubServer, tmp_path: Path) -> Path:
    """A synthetic export uploaded as a dataset repo, laid out like the competition's (prefix datasets/)."""
    from huggingface_hub import HfApi

    from golfrun.data.synthetic import build_dataset

    src = tmp_path / "export"
    build_dataset(src, train_shards=3)
    api = HfApi(endpoint=hf_hub.endpoint)
    api.create_repo(REPO_ID, repo_type="dataset")
    api.upload_folder(folder_path=str(src), path_in_repo="datasets", repo_id=REPO_ID, repo_type="dataset")
    return src


def hf_campaign(tmp: Path, shards: int = 2) -> None:
    write_campaign(tmp, tmp / "got")
    text = (tmp / "campaign.toml").read_text()
    text = text.replace('source = "synthetic"', f'source = "hf:{REPO_ID}"').replace("train_shards = 2", f"train_shards = {shards}")
    (tmp / "campaign.toml").write_text(text)


def test_hf_download_layout_checksums_and_resume(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    hf_campaign(tmp_path)
    code, summary, out = run_stage(tmp_path)
    assert code == 0, out
    # one line per file: which, how many, how big
    assert re.search(r"^download-data: 1/5 datasets/\S+ \(\d+\.\d MB\)$", out, re.M), out
    got = tmp_path / "got"
    ds = got / "datasets" / "fineweb10B_sp512"
    assert sorted(p.name for p in ds.iterdir()) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert (got / "manifest.json").is_file() and (got / "tokenizers" / "fineweb_512_bpe.model").is_file()
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        assert (ds / name).read_bytes() == (published / "datasets" / "fineweb10B_sp512" / name).read_bytes()
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["hub_checksums"]["passed"] and checks["shard_headers"]["passed"]
    assert summary["decision"]["downloaded"] == 5  # 1 val + 2 train + tokenizer model and vocab

    requests_before = len(hf_hub.state.requests)
    code, summary, _ = run_stage(tmp_path, force=True)
    assert code == 0 and summary["decision"]["downloaded"] == 0  # everything in place was kept
    assert not any(m == "GET" and "/resolve/" in p and p.endswith(".bin") for m, p in hf_hub.state.requests[requests_before:])


def test_hf_download_rejects_content_that_does_not_match_the_hub(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    hf_hub.flip_byte(REPO_ID, "datasets/datasets/fineweb10B_sp512/fineweb_train_000001.bin", repo_type="dataset", offset=5000)
    hf_campaign(tmp_path)
    code, summary, _ = run_stage(tmp_path)
    assert code == 10
    check = next(c for c in summary["checks"] if c["name"] == "hub_checksums")
    assert not check["passed"] and "fineweb_train_000001.bin" in check["detail"]
    assert not (tmp_path / "got" / "datasets" / "fineweb10B_sp512" / "fineweb_train_000001.bin").exists()


def test_hf_download_checks_free_disk_before_downloading(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    hf_campaign(tmp_path)
    code, summary, _ = run_stage(tmp_path, "data.min_free_disk_gb=1000000.0")
    assert code == 10
    assert not next(c for c in summary["checks"] if c["name"] == "free_disk_gb_after")["passed"]
    assert not (tmp_path / "got" / "datasets").exists()


def test_hf_more_shards_than_the_repo_has_is_a_usage_error(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    hf_campaign(tmp_path, shards=9)
    code, _, out = run_stage(tmp_path)
    assert code == 12 or code == 2
    assert "only 3 train shards" in out or "only 3 train shards" in json.dumps(_)


def test_hf_a_file_the_manifest_names_but_the_repo_lacks_is_an_error(tmp_path: Path, hf_hub: HubServer, published: Path) -> None:
    """The Hub's file metadata is read for every file before any shard is downloaded: a shard the
    manifest lists but the repo does not hold is an ERROR naming it, with nothing downloaded."""
    from huggingface_hub import HfApi

    HfApi(endpoint=hf_hub.endpoint).delete_file("datasets/datasets/fineweb10B_sp512/fineweb_val_000000.bin",
                                                REPO_ID, repo_type="dataset")
    hf_campaign(tmp_path)
    code, summary, out = run_stage(tmp_path)
    assert code == 12, out
    assert "not in the repo" in out and "fineweb_val_000000.bin" in out
    assert not (tmp_path / "got" / "datasets").exists()
