"""benchmarks/record_phase.py: a record's own train_gpt.py run and read like ours, and record_fa3, the
flash_attn_interface it runs with. The record's script needs CUDA and FA3, so here its place is taken by a script
that writes the lines of a captured log as the record writes them and then, like the record's final validation,
does not end: what is tested is the runner (environment, stand-in first on the path, stopping at the last step, the
rates), on real lines."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import record_phase  # noqa: E402
from record_fa3 import flash_attn_interface as standin  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
TB = 786432

SCRIPT = '''import os, sys, time
import flash_attn_interface
print("standin:" + flash_attn_interface.__file__, flush=True)
print("env:" + " ".join(os.environ[k] for k in ("TRAIN_LOG_EVERY", "TTT_ENABLED", "ITERATIONS", "DATA_DIR")), flush=True)
for line in open(sys.argv[0] + ".log"):
    print(line, end="", flush=True)
time.sleep(600)  # the validation after the last step: not waited for
'''


def fake_record(tmp_path: Path, log: str) -> Path:
    script = tmp_path / "train_gpt.py"
    script.write_text(SCRIPT)
    (tmp_path / "train_gpt.py.log").write_text(log)
    return script


def test_the_record_runs_with_the_standin_and_stops_at_its_last_step(tmp_path):
    log = (FIXTURES / "h100-baseline-next.log").read_text()
    out = tmp_path / "out" / "record.json"
    out.parent.mkdir()
    res = record_phase.record_phase(str(fake_record(tmp_path, log)), "/data/x", str(out), {"ITERS": "24"},
                                    timeout_s=120, cache_state="cold", echo=False)
    assert res["complete"] and not res["timed_out"] and res["wall_s"] < 60  # not the 600 s of the validation
    written = out.with_suffix(".log").read_text()
    assert f"standin:{ROOT / 'benchmarks' / 'record_fa3' / 'flash_attn_interface.py'}" in written
    assert "env:1 0 24 /data/x" in written
    assert len(res["losses"]) == 24 and res["tokens_per_s_all"] == 833383
    assert res["tokens_per_s_preloop"] == res["steady"]["tokens_per_s_preloop"]
    assert res["step_ms_loop"] == pytest.approx(1000 * TB / res["steady"]["tokens_per_s_loop"])
    assert res["attention_backend"] == record_phase.ATTENTION and res["compile_cache"] == "cold"
    assert "TRAIN_LOG_EVERY=1" in res["command"] and res["command"].endswith("python3 train_gpt.py")


def test_a_record_run_killed_before_its_last_step_is_not_complete(tmp_path):
    lines = (FIXTURES / "h100-baseline-next.log").read_text().splitlines(keepends=True)
    log = "".join(line for line in lines if not line.startswith(("23/24", "24/24")))
    out = tmp_path / "record.json"
    res = record_phase.record_phase(str(fake_record(tmp_path, log)), "/data/x", str(out), {"ITERS": "24"},
                                    timeout_s=5, echo=False)
    assert not res["complete"] and res["timed_out"] and "tokens_per_s_loop" not in res
    assert res["tokens_per_s_running"] == float(lines[[i for i, x in enumerate(lines) if x.startswith("22/24")][0]]
                                                .rsplit(" ", 1)[1])


def test_repeated_kv_is_fa3s_grouping():
    """Query head h reads K/V head h // group (FA3's and SDPA's GQA); a tiled repeat would pass the shapes and
    give other numbers."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 8, 16, 4), torch.randn(1, 2, 16, 4), torch.randn(1, 2, 16, 4)  # (B, H, T, D)
    kk, vv = standin.repeat_kv(k.transpose(1, 2), v.transpose(1, 2), 8)
    got = F.scaled_dot_product_attention(q, kk.transpose(1, 2), vv.transpose(1, 2), is_causal=True)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(got, want, atol=1e-6)
    kt = k.transpose(1, 2)
    assert standin.repeat_kv(kt, kt, 2)[0] is kt  # one query head a K/V head: nothing copied


def test_the_dense_entry_point_matches_causal_gqa_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 16, 8, 4), torch.randn(2, 16, 2, 4), torch.randn(2, 16, 2, 4)  # (B, T, H, D)
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                          enable_gqa=True).transpose(1, 2)
    assert torch.allclose(standin.flash_attn_func(q, k, v, causal=True), want, atol=1e-6)
    with pytest.raises(NotImplementedError, match="plain dense attention only"):
        standin.flash_attn_func(q, k, v, causal=True, softcap=30.0)
