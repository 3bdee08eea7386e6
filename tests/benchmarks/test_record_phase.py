"""benchmarks/record_phase.py: a record's own train_gpt.py run and read like ours, and record_fa3, the
flash_attn_interface it runs with. The record's script needs CUDA and FA3, so here its place is taken by a script
that writes the log the record's script wrote on an H100 (the eighteenth session's `record-long`,
fixtures/h100-record-long.log) and then, like the record's final validation, does not end: what is tested is the
runner (environment, stand-in first on the path, stopping at the last step, the rates) on the record's own lines."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import record_phase  # noqa: E402
from record_fa3 import flash_attn_interface as standin  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
RECORD_LOG = FIXTURES / "h100-record-long.log"
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
    out = tmp_path / "out" / "record.json"
    out.parent.mkdir()
    res = record_phase.record_phase(str(fake_record(tmp_path, RECORD_LOG.read_text())), "/data/x", str(out),
                                    {"ITERS": "24"}, timeout_s=120, cache_state="cold", echo=False)
    assert res["complete"] and not res["timed_out"] and res["wall_s"] < 60  # not the 600 s of the validation
    written = out.with_suffix(".log").read_text()
    assert f"standin:{ROOT / 'benchmarks' / 'record_fa3' / 'flash_attn_interface.py'}" in written
    assert "env:1 0 24 /data/x" in written
    assert len(res["losses"]) == 24 and res["losses"]["1"] == 8.9918 and res["losses"]["24"] == 3.3738
    assert res["tokens_per_s_all"] == 848743 and res["loop_from_step"] == 12
    # the session's figures: steps 2-12 before looping, 14-24 with it, from the rates of the record's own lines
    assert round(res["tokens_per_s_preloop"]) == 1066101 and round(res["step_ms_preloop"], 2) == 737.67
    assert round(res["tokens_per_s_loop"]) == 702635 and round(res["step_ms_loop"], 2) == 1119.26
    assert res["steady"]["steps_preloop"] == res["steady"]["steps_loop"] == 11
    assert res["attention_backend"] == record_phase.ATTENTION and res["compile_cache"] == "cold"
    assert "TRAIN_LOG_EVERY=1" in res["command"] and res["command"].endswith("python3 train_gpt.py")


def test_a_record_run_killed_before_its_last_step_is_not_complete(tmp_path):
    lines = RECORD_LOG.read_text().splitlines(keepends=True)
    log = "".join(line for line in lines if not line.startswith(("23/24", "24/24")))
    out = tmp_path / "record.json"
    res = record_phase.record_phase(str(fake_record(tmp_path, log)), "/data/x", str(out), {"ITERS": "24"},
                                    timeout_s=5, echo=False)
    assert not res["complete"] and res["timed_out"] and "tokens_per_s_loop" not in res
    assert res["tokens_per_s_running"] == 865169 and len(res["losses"]) == 22  # the log's line of step 22


def test_the_summary_on_disk_holds_the_line_the_harness_was_killed_after(tmp_path):
    """The eighteenth session's last call ran out of time around bench_train_phase.py itself, while the trainer was
    between two steps: what it had written lacked the last line it had read. The summary is now written after
    each line is read."""
    lines = RECORD_LOG.read_text().splitlines(keepends=True)
    head = tmp_path / "head.log"
    step5 = next(i for i, line in enumerate(lines) if line.startswith("5/24"))
    head.write_text("".join(lines[:step5 + 1]))  # the trainer's lines up to step 5, then 5 s to its next
    script, out = tmp_path / "cat.py", tmp_path / "record.json"
    script.write_text(f"import time\nprint(open({str(head)!r}).read(), end='', flush=True)\ntime.sleep(5)\n")  # outlives the killed harness 4 s
    harness = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import record_phase; "
        f"record_phase.record_phase({str(script)!r}, '/data/x', {str(out)!r}, {{'ITERS': '24'}}, echo=False)")])
    deadline = time.monotonic() + 60
    while "5/24" not in (out.with_suffix(".log").read_text() if out.with_suffix(".log").is_file() else ""):
        assert time.monotonic() < deadline and harness.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)  # the trainer is between steps; the harness has read the line
    harness.kill()
    harness.wait(timeout=30)
    assert sorted(json.loads(out.read_text())["losses"], key=int) == ["1", "2", "3", "4", "5"]


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


PROFILED = '''import sys, time
with open(sys.argv[0] + ".log") as lines:
    for line in lines:
        if line.startswith(("6/24", "19/24")):
            time.sleep(0.3)  # the captured steps
        print(line, end="", flush=True)
        print(line, end="", file=open(sys.argv[0] + ".copy", "a"))  # the record's log file: not watched
time.sleep(600)
'''


def test_the_record_profile_captures_one_step_before_looping_and_one_with_it(tmp_path):
    """record_profile.py runs the script as __main__ and starts the profiler at the lines of steps 5 and 18, stopping
    it at the next: steps 6 and 19, each written out as it ends, in profile_step.py's kinds (a CPU capture here,
    which holds no GPU kernel time)."""
    script = tmp_path / "train_gpt.py"
    script.write_text(PROFILED)
    (tmp_path / "train_gpt.py.log").write_text(RECORD_LOG.read_text())
    profile, out = tmp_path / "profile.json", tmp_path / "run.json"
    res = record_phase.record_phase(str(script), "/data/x", str(out), {"ITERS": "24"}, timeout_s=120, echo=False,
                                    profile_to=str(profile))
    assert res["complete"] and "record_profile.py OUT.json train_gpt.py" in res["command"]
    found = json.loads(profile.read_text())
    assert found["device"] == "cpu" and list(found["phases"]) == ["preloop", "loop"]
    assert [found["phases"][p]["step"] for p in ("preloop", "loop")] == [6, 19]
    for phase in found["phases"].values():
        assert 300 <= phase["step_ms"] < 3000 and phase["by_kind_ms"] == {} and phase["idle"]["kernels"] == 0
