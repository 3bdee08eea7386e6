"""benchmarks/kernel_session.py's planning and verdicts, the parts a GPU session relies on and that run here: which
steps come first (FIRST), what each configuration sets, and the loss-equivalence verdicts."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import kernel_session as ks  # noqa: E402

CFG = {"iters": 24, "equiv_iters": 100}


def names(first: str) -> list[str]:
    return [s["name"] for s in ks.ordered(ks.steps(CFG), first)]


def test_first_puts_the_checks_a_step_needs_just_before_it():
    # the plan is one pass: without this, plain-loss would wait a whole call for loss-check (sixth session)
    assert names("baseline,plain-loss")[:3] == ["baseline", "loss-check", "plain-loss"]
    assert names("default")[:4] == ["fa4-checks", "loss-check", "qk-check", "default"]
    assert names("loss-check,baseline,plain-loss")[:3] == ["loss-check", "baseline", "plain-loss"]
    assert names("both-tiled")[:2] == ["mlp-tiles", "both-tiled"]
    for first in ("", "baseline,plain-loss", "default,fa4-checks"):
        got = names(first)
        assert sorted(got) == sorted(s["name"] for s in ks.steps(CFG))  # each step once, none lost


def test_first_refuses_an_unknown_step(monkeypatch):
    monkeypatch.setattr(ks, "PENDING", {})
    with pytest.raises(SystemExit, match=r"FIRST names unknown steps \['next'\]"):  # no candidate is pending
        names("baseline,next")


def test_every_training_configuration_names_each_kernel_setting():
    """So that a change of the trainer's defaults (auto) leaves the reference and the single changes as measured."""
    for step in ks.steps(CFG):
        if step["kind"] == "train":
            assert {"MLP_KERNEL", "ATTN_BACKEND", "LOSS_KERNEL", "QK_KERNEL", "XSA_KERNEL", "ATTN_CU_TRIM",
                    "MLP_SAVE_SIGNS"} <= step["env"].keys(), step["name"]
    env = {s["name"]: s["env"] for s in ks.steps(CFG) if s["kind"] == "train"}
    assert env["baseline"] == {"MLP_KERNEL": "plain", "ATTN_BACKEND": "varlen", "LOSS_KERNEL": "plain",
                               "QK_KERNEL": "plain", "XSA_KERNEL": "plain", "ATTN_CU_TRIM": "0", "MLP_SAVE_SIGNS": "0"}
    assert env["default"] == {"MLP_KERNEL": "triton", "ATTN_BACKEND": "fa4", "LOSS_KERNEL": "triton",
                              "QK_KERNEL": "triton", "XSA_KERNEL": "plain", "ATTN_CU_TRIM": "1",
                              "MLP_SAVE_SIGNS": "0"}


def test_the_fused_xsa_is_the_pending_candidate():
    """The nineteenth session's candidate as planned: `next` and `next-long` are the default with XSA_KERNEL=triton
    after xsa-check passed, on new graphs (the op replaces traced ops); `baseline-next` is the record's kernels with
    it (no flash-attn-4 needed), compiled too; everything measured before keeps the plain XSA."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert ks.PENDING == {"XSA_KERNEL": "triton"} and plan["xsa-check"] == {"name": "xsa-check", "kind": "checks",
                                                                            "only": "xsa"}
    assert ks.check_source("xsa") == "xsa-check" and ks.check_time_key(plan["xsa-check"]) == "xsa_check_s"
    for name in ("next", "next-long", "next-equiv", "baseline-next"):
        assert plan[name]["env"]["XSA_KERNEL"] == "triton", name
    assert {**plan["next"]["env"], "XSA_KERNEL": "plain"} == plan["default"]["env"]
    assert {**plan["baseline-next"]["env"], "XSA_KERNEL": "plain"} == plan["baseline"]["env"]
    assert "same_graphs_as" not in plan["next"] and "same_graphs_as" not in plan["baseline-next"]
    assert "xsa" in plan["next"]["needs"] and "xsa" in plan["next-long"]["needs"]
    assert plan["baseline-next"]["needs"] == ["xsa"]  # waits for its check too
    names_ = [s["name"] for s in ks.steps(CFG)]  # where the record is scored, the default and the candidate both
    assert names_.index("baseline-long") < names_.index("default-long") == names_.index("next-long") - 1
    assert plan["default-long"]["try"] and plan["next-long"]["try"]  # new graphs each: started past an estimate
    for name in ("baseline", "default", "baseline-long", "default-long", "both"):
        assert plan[name]["env"]["XSA_KERNEL"] == "plain", name


def test_pending_candidates_add_next_and_its_equivalence(monkeypatch):
    monkeypatch.setattr(ks, "PENDING", {})
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert "next" not in plan and "next-equiv" not in plan and plan["tiled"]["same_graphs_as"] == "default"
    monkeypatch.setattr(ks, "PENDING", {"MLP_TILE_UP": "128,128,64,8,8,6,1"})
    monkeypatch.setattr(ks, "PENDING_NEEDS", ["mlp"])  # a candidate whose check is kernel_checks.py's mlp
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["next"]["env"]["MLP_TILE_UP"] == "128,128,64,8,8,6,1"
    assert plan["next-equiv"]["same_graphs_as"] == "next" and plan["tiled"]["same_graphs_as"] == "next"
    assert plan["gemm"]["env"]["MLP_TILE_UP"] == "128,128,64,8,8,6,1" and "default-equiv" not in plan
    # the checks a candidate needs gate every step that runs it, and FIRST puts them before it
    for name in ("next", "next-equiv", "tiled", "profile", "bytes", "tuned", "gemm"):
        assert "mlp" in plan[name]["needs"], name
    assert "mlp" not in plan["default"]["needs"]
    assert names("next")[:5] == ["fa4-checks", "loss-check", "qk-check", "checks", "next"]


def fresh_state(**steps) -> dict:
    return {"measured": {}, "steps": {n: {"status": st, "kind": "train"} for n, st in steps.items()}}


def test_the_cold_baseline_starts_in_a_short_first_call():
    """The eighth session's call 1 (CALL_S=300) deferred the baseline, whose conservative estimate (327 s) overran
    it, and spent the call on checks: the reference starts like a try, and the other tries still wait for it."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    est = ks.estimate(plan["baseline"], fresh_state())
    assert est > 298 - ks.MARGIN_S  # the situation of that call
    assert ks.may_start(plan["baseline"], est, 298, fresh_state())
    assert not ks.may_start(plan["default"], est, 298, fresh_state())  # no speed-up without its baseline
    assert ks.may_start(plan["default"], est, 298, fresh_state(baseline="done"))
    assert not ks.may_start(plan["default"], est, ks.TRY_LEFT_S + ks.MARGIN_S - 1, fresh_state(baseline="done"))
    assert not ks.may_start(plan["baseline-equiv"], est, 298, fresh_state(baseline="done"))  # not a try
    # measured in four sessions, and the tenth's call 2 lost 180 s starting it past its estimate: no longer a try
    assert not ks.may_start(plan["plain-loss"], est, 298, fresh_state(baseline="done"))
    assert ks.may_start(plan["baseline-equiv"], 100, 121, fresh_state())  # fits


def test_an_autotuned_compile_is_estimated_as_a_cold_one():
    # the eighth session estimated `tuned` at 67 s from default's warm 27 s compile; it took 288 s
    plan = {s["name"]: s for s in ks.steps(CFG)}
    state = fresh_state(baseline="done", default="done")
    state["measured"] = {"shared_compile_s": 26.7, "cold_compile_s": 248.6}
    assert ks.estimate(plan["tuned"], state) > 248.6 > ks.estimate(plan["default"], state)
    assert [n for n, step in plan.items() if ks.own_inductor_config(step)] == ["bytes", "tuned", "gemm"]
    # the byte counts need Inductor's benchmark harness in its kernels: another configuration, another compile
    assert plan["bytes"]["env"]["TORCHINDUCTOR_BENCHMARK_KERNEL"] == "1"
    assert ks.estimate(plan["bytes"], state) > 248.6 + ks.estimate(plan["profile"], state) - 1


def test_publish_brings_back_the_profile_the_byte_counts_and_every_check(tmp_path):
    state_dir, out = tmp_path / "state", tmp_path / "out"
    state_dir.mkdir()
    (state_dir / "profile.json").write_text('{"phases": {}}')
    (state_dir / "bytes.json").write_text('{"phases": {"loop": {"inductor_bytes": {}}}}')
    (state_dir / "profile-long.json").write_text('{"phases": {"preloop": {}}}')
    checks = [s["name"] for s in ks.steps(CFG) if s["kind"] == "checks"]
    for name in checks:
        (state_dir / f"{name}.json").write_text(json.dumps({"ok": True, "step": name}))
    ks.publish({"steps": {}}, {"out": out, "state": state_dir, "name": "s8"})
    assert json.loads((out / "s8-bytes.json").read_text())["phases"]["loop"] == {"inductor_bytes": {}}
    assert (out / "s8-profile.json").is_file() and (out / "s8-session.tar.gz").is_file()
    assert json.loads((out / "s8-profile-long.json").read_text()) == {"phases": {"preloop": {}}}
    # one file for all the checks, the twelfth session's mlp-signs-check among them
    assert "mlp-signs-check" in checks and json.loads((out / "s8-checks.json").read_text()) == {
        name: {"ok": True, "step": name} for name in checks}


def write_losses(state: Path, name: str, losses: list[float]) -> None:
    (state / f"s-{name}.json").write_text(json.dumps({"losses": {str(i + 1): x for i, x in enumerate(losses)}}))


@pytest.mark.parametrize("deltas, tolerance, noise", [
    ([0.0] * 30 + [0.0568] + [0.005, -0.005] * 34 + [0.0], False, True),  # one large step, as the sixth session's
    ([0.03] * 100, False, False),  # a steady drift: the mean is three times plain's noise
    ([0.001] * 100, True, True),
])
def test_equivalence_judges_the_mean_against_plains_noise(tmp_path, deltas, tolerance, noise):
    base = [4.0 - 0.03 * i for i in range(100)]
    write_losses(tmp_path, "baseline-equiv", base)
    write_losses(tmp_path, "next-equiv", [b + d for b, d in zip(base, deltas)])
    res = ks.equivalence({"state": tmp_path, "name": "s", "equiv_iters": 100}, "next-equiv")
    assert (res["within_tolerance"], res["within_noise"]) == (tolerance, noise)
    assert res["noise_floor"]["source"] == ks.NOISE_FLOOR["source"]  # no baseline-noise in this session


def test_equivalence_needs_every_step_and_prefers_this_sessions_noise(tmp_path):
    base = [4.0 - 0.03 * i for i in range(100)]
    write_losses(tmp_path, "baseline-equiv", base)
    write_losses(tmp_path, "next-equiv", base[:60])  # killed at step 60
    cfg = {"state": tmp_path, "name": "s", "equiv_iters": 100}
    assert ks.equivalence(cfg, "next-equiv")["within_noise"] is False
    write_losses(tmp_path, "next-equiv", [b + 0.004 for b in base])
    write_losses(tmp_path, "baseline-noise", [b + 0.002 for b in base])  # a quieter machine than the first session's
    res = ks.equivalence(cfg, "next-equiv")
    assert res["noise_floor"]["source"] == "baseline-noise (this session)" and res["within_noise"] is False


def test_the_verdict_comes_out_whichever_of_its_steps_ends_last(tmp_path):
    """The twelfth session ran baseline-equiv after next-equiv: the verdict is made when the reference ends too, into
    the session state and the compared configuration's own file, which OUT then holds."""
    base = [4.0 - 0.03 * i for i in range(100)]
    write_losses(tmp_path, "next-equiv", [b + 0.004 for b in base])
    cfg = {"state": tmp_path, "name": "s", "equiv_iters": 100, "out": tmp_path / "out"}
    state = {"steps": {}}
    ks.after_step("next-equiv", state, cfg)
    assert state["equivalence"] == {}  # no reference yet
    write_losses(tmp_path, "baseline-equiv", base)
    ks.after_step("baseline-equiv", state, cfg)
    assert state["equivalence"]["next-equiv"]["diff"]["mean_abs"] == pytest.approx(0.004)
    assert json.loads((tmp_path / "out" / "s-configs.json").read_text())["next-equiv"]["equivalence"]["within_noise"]


def test_a_candidate_inside_the_ops_reuses_default_graphs_and_the_sweeps_fastest_loss_tiles(monkeypatch):
    """A candidate read when the ops run (the ninth session's: a form of the loss kernels) leaves the graphs as they
    are, so `next` is default's graphs (a warm compile once default ran) and runs, with next-equiv and the profile,
    at the loss check's fastest launches where they are not built in."""
    monkeypatch.setattr(ks, "PENDING", {"LOSS_TILE_FWD": "1,2048,4"})
    monkeypatch.setattr(ks, "PENDING_IN_OPS", True)
    monkeypatch.setattr(ks, "PENDING_LOSS_TILES", True)
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["next"]["same_graphs_as"] == "default" and plan["next"]["env"]["LOSS_TILE_FWD"] == "1,2048,4"
    state = fresh_state(default="done")
    assert ks.estimate(plan["next"], state) < ks.estimate(plan["next"], fresh_state())  # warm, not new graphs
    best = {"fwd": {"tile": "8,512,4", "default_tile": "4,1024,4"}, "bwd": {"tile": "1,2048,4", "default_tile": "1,2048,4"}}
    state["steps"]["loss-check"] = {"status": "done", "result": {"loss": {"ok": True, "kernels": {"best": best}}}}
    for name in ("next", "next-equiv", "profile"):
        env = ks.step_env(plan[name], state)
        assert env["LOSS_TILE_FWD"] == "8,512,4" and "LOSS_TILE_BWD" not in env, name  # the built-in bwd is fastest
    assert ks.step_env(plan["default"], state) == plan["default"]["env"]  # default keeps the built-in launches
    assert ks.step_env(plan["next"], fresh_state())["LOSS_TILE_FWD"] == "1,2048,4"  # no sweep yet: its own
    monkeypatch.setattr(ks, "PENDING_IN_OPS", False)  # a candidate that changes the graphs compiles them
    assert "same_graphs_as" not in {s["name"]: s for s in ks.steps(CFG)}["next"]


def test_a_candidate_inside_the_ops_that_is_no_loss_form_keeps_default_launches(monkeypatch):
    """A candidate read inside an op that is not a form of the loss kernels (the eleventh session's, ATTN_CU_TRIM):
    `next` is default with it alone, on default's graphs (a warm compile), at default's launches even where the
    loss sweep found faster ones, gated by the fa4 check; next-equiv replaces default-equiv."""
    monkeypatch.setattr(ks, "PENDING", {"ATTN_CU_TRIM": "0"})
    monkeypatch.setattr(ks, "PENDING_NEEDS", [])
    monkeypatch.setattr(ks, "PENDING_IN_OPS", True)
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["next"]["env"] == {**plan["default"]["env"], "ATTN_CU_TRIM": "0"}
    assert plan["next"]["same_graphs_as"] == "default" and "fa4" in plan["next"]["needs"]
    assert "next-equiv" in plan and "default-equiv" not in plan
    best = {"fwd": {"tile": "8,512,4", "default_tile": "4,1024,4"},
            "bwd": {"tile": "1,2048,4", "default_tile": "1,2048,4"}}
    state = fresh_state(default="done")
    state["steps"]["loss-check"] = {"status": "done", "result": {"loss": {"ok": True, "kernels": {"best": best}}}}
    for name in ("next", "next-equiv", "profile"):
        assert ks.step_env(plan[name], state) == plan[name]["env"], name
    assert names("next")[:4] == ["fa4-checks", "loss-check", "qk-check", "next"]


def test_the_fused_qk_norm_is_part_of_the_default_after_its_check(monkeypatch):
    """The tenth session's candidate became the default: `default` and every step built on it run QK_KERNEL=triton,
    gated by the qk-check step, which FIRST puts before them; the reference and the single changes name
    QK_KERNEL=plain, so they stay as measured."""
    monkeypatch.setattr(ks, "PENDING", {})
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert "next" not in plan and ks.check_source("qk") == "qk-check" and plan["qk-check"]["only"] == "qk"
    assert names("default")[:4] == ["fa4-checks", "loss-check", "qk-check", "default"]
    for name in ("baseline", "plain-loss", "both", "fa4", "triton", "gqa"):
        assert plan[name]["env"]["QK_KERNEL"] == "plain", name
    for name in ("default", "default-equiv", "tiled", "profile", "bytes", "tuned", "gemm"):
        assert plan[name]["env"]["QK_KERNEL"] == "triton" and "qk" in plan[name]["needs"], name


def test_the_mlp_signs_candidate_compiles_new_graphs_after_its_check(monkeypatch):
    """The twelfth session's candidate (MLP_SAVE_SIGNS=1): `next` is default with it, gated by the mlp-signs check
    (kernel_checks.py mlp-signs), which FIRST puts before it; the op saves a uint8 tensor instead of pre, so the
    compiled graphs change and `next` compiles its own instead of reusing default's."""
    monkeypatch.setattr(ks, "PENDING", {"MLP_SAVE_SIGNS": "1"})
    monkeypatch.setattr(ks, "PENDING_NEEDS", ["mlp-signs"])
    monkeypatch.setattr(ks, "PENDING_IN_OPS", False)
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["next"]["env"] == {**plan["default"]["env"], "MLP_SAVE_SIGNS": "1"}
    assert ks.check_source("mlp-signs") == "mlp-signs-check" and plan["mlp-signs-check"]["only"] == "mlp-signs"
    assert "same_graphs_as" not in plan["next"] and plan["next-equiv"]["same_graphs_as"] == "next"
    assert names("baseline,mlp-signs-check,next")[:6] == ["baseline", "mlp-signs-check", "fa4-checks", "loss-check",
                                                          "qk-check", "next"]


def test_a_candidate_that_applies_to_the_record_kernels_also_runs_on_baseline_graphs(monkeypatch):
    """baseline-next: the record's kernels with the candidate, on baseline's graphs, needing no flash-attn-4, so that
    a session's first call measures the candidate; absent for a candidate of the fast kernels alone. (The fused loss
    was such a candidate: it runs with the record's kernels too, as `plain-loss`.)"""
    monkeypatch.setattr(ks, "PENDING", {"LOSS_KERNEL": "triton"})
    monkeypatch.setattr(ks, "PENDING_NEEDS", [])  # a candidate without a check of its own
    monkeypatch.setattr(ks, "PENDING_IN_OPS", True)
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["baseline-next"]["env"] == {**plan["baseline"]["env"], "LOSS_KERNEL": "triton"}
    assert plan["baseline-next"]["same_graphs_as"] == "baseline"
    assert not plan["baseline-next"].get("needs") and not plan["baseline-next"].get("needs_fa4")
    monkeypatch.setattr(ks, "PENDING_ON_PLAIN", False)
    assert "baseline-next" not in {s["name"] for s in ks.steps(CFG)}
    monkeypatch.setattr(ks, "PENDING_ON_PLAIN", True)
    monkeypatch.setattr(ks, "PENDING", {})
    assert "baseline-next" not in {s["name"] for s in ks.steps(CFG)}


def test_long_steps_run_on_the_fineweb_length_data_and_teach_no_step_time(tmp_path, monkeypatch):
    """baseline-long and the top configuration's -long step train on DATA_LONG (documents of FineWeb's length), are
    skipped with the reason when it is missing, are estimated with their slower steps, and leave the estimates of
    the main data's steps alone."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    top = "next" if ks.PENDING else "default"
    assert plan["baseline-long"]["env"] == plan["baseline"]["env"] and plan[f"{top}-long"]["env"] == plan[top]["env"]
    assert plan[f"{top}-long"]["needs"] == plan[top]["needs"]
    cfg = {"data": str(tmp_path / "data"), "data_long": str(tmp_path / "long"), "fa4_site": tmp_path, "smoke": False}
    state = fresh_state()
    assert ks.blocked(plan["baseline-long"], state, cfg) == f"no FineWeb-length dataset in {tmp_path / 'long'} " \
                                                              "(bench_kernels_1gpu.sh builds it)"
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "manifest.json").write_text("{}")
    assert ks.blocked(plan["baseline-long"], state, cfg) is None and ks.blocked(plan["baseline"], state, cfg) is None
    assert ks.estimate(plan["baseline-long"], state) > ks.estimate(plan["baseline"], state)
    res = {"complete": True, "step_ms_preloop": 2000.0, "step_ms_loop": 3000.0, "wall_s": 300.0, "priming_s": 150.0,
           "compile_s": 100.0}
    ks.learn(plan["baseline-long"], res, state, "cold")
    assert state["measured"] == {}
    seen = {}
    monkeypatch.setattr(ks, "train_phase", lambda data, *a, **k: seen.setdefault("data", data) and {})
    ks.run_train(plan["baseline-long"], {**cfg, "warmup": 2, "state": tmp_path, "name": "s", "carried": False},
                 state, 60.0)
    assert seen["data"] == str(tmp_path / "long")


def test_one_ranks_step_runs_one_microbatch_a_step_on_the_graphs_of_eight(monkeypatch):
    """The -1mb steps: one rank's step of an 8-GPU run (one microbatch of the record's size a step, eight times the
    steps for the same tokens) on the graphs and documents of the 8-microbatch configuration; estimated as the same
    tokens' time, and teaching no step time."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    top = "next" if ks.PENDING else "default"
    one_mb = {"GRAD_ACCUM": "1", "TRAIN_BATCH_TOKENS": "98304"}
    for name, of in (("baseline-1mb", "baseline"), ("default-1mb", "default"), ("baseline-long-1mb", "baseline-long"),
                     (f"{top}-long-1mb", f"{top}-long")):
        assert plan[name]["env"] == {**plan[of]["env"], **one_mb}, name
        assert plan[name]["iters"] == 8 * CFG["iters"] and plan[name]["microbatches"] == 1
        assert plan[name]["same_graphs_as"] == of and plan[name].get("data") == plan[of].get("data")
        assert [plan[name].get(k) for k in ("needs", "needs_fa4")] == [plan[of].get(k) for k in ("needs", "needs_fa4")]
    state = fresh_state(baseline="done")
    state["measured"] = {"step_pre_s": 0.75, "step_loop_s": 1.13, "warm_compile_s": 17.0, "overhead_s": 15.0}
    eight = {k: v for k, v in plan["baseline-1mb"].items() if k != "microbatches"} | {"iters": CFG["iters"]}
    eight = ks.estimate(eight, state)  # 24 steps of 8 microbatches on baseline's graphs
    assert 15.0 + 17.0 + 12 * (0.75 + 1.13) < ks.estimate(plan["baseline-1mb"], state) < eight
    ks.learn(plan["baseline-1mb"], {"complete": True, "step_ms_preloop": 90.0, "step_ms_loop": 140.0, "wall_s": 60.0,
                                    "priming_s": 5.0, "compile_s": 16.0}, state, "warm")
    assert state["measured"]["step_pre_s"] == 0.75 and state["measured"]["warm_compile_s"] == 17.0
    # after the checks, before the steps that need other sessions' time; FIRST can name them
    order = [s["name"] for s in ks.steps(CFG)]
    position = {name: i for i, name in enumerate(order)}
    assert position["qk-check"] < position["baseline-1mb"] < position["fp8-check"]
    assert position["default"] < position["default-1mb"] < position["tiled"]
    assert position["profile-long"] < position["baseline-long-1mb"] < position[f"{top}-long-1mb"] < position["tuned"]


def test_the_long_documents_profile_runs_on_their_data_after_their_training_step(tmp_path, monkeypatch):
    """profile-long: the top configuration's kernels profiled on DATA_LONG, after the -long step whose graphs it
    reuses; its time (which may hold a compile) teaches nothing about the main profile's."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    top = "next" if ks.PENDING else "default"
    assert plan["profile-long"]["env"] == plan["profile"]["env"] and plan["profile-long"]["data"] == "long"
    assert plan["profile-long"]["needs"] == plan["profile"]["needs"]
    order = [s["name"] for s in ks.steps(CFG)]
    assert order.index(f"{top}-long") < order.index("profile-long")
    seen = {}

    def fake_run(argv, env, **kw):
        seen["data"] = env["DATA_DIR"]
        return type("Done", (), {"returncode": 0})()
    monkeypatch.setattr(ks.subprocess, "run", fake_run)
    cfg = {"data": str(tmp_path / "data"), "data_long": str(tmp_path / "long"), "state": tmp_path,
           "fa4_site": tmp_path}
    ks.run_profile(plan["profile-long"], cfg, fresh_state(), 60.0)
    assert seen["data"] == str(tmp_path / "long")
    ks.run_profile(plan["profile"], cfg, fresh_state(), 60.0)
    assert seen["data"] == str(tmp_path / "data")
    state = fresh_state()
    monkeypatch.setattr(ks, "run_profile", lambda *a: {"complete": True})
    ks.run_step(plan["profile-long"], {**cfg, "smoke": False}, state, 300.0)
    assert "profile_s" not in state["measured"]
    ks.run_step(plan["profile"], {**cfg, "smoke": False}, state, 300.0)
    assert "profile_s" in state["measured"]


def test_the_record_kernels_long_profile_sits_beside_the_records(tmp_path):
    """baseline-profile-long: the record's kernels in our trainer profiled on the long documents after
    baseline-long (its graphs) and beside record-profile-long; publish brings it home under its own name, and the
    files a call brings back stay within the device's 8."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    step = plan["baseline-profile-long"]
    assert step["kind"] == "profile" and step["env"] == plan["baseline-long"]["env"] and step["data"] == "long"
    order = [s["name"] for s in ks.steps(CFG)]
    assert order.index("baseline-long") < order.index("record-profile-long") < order.index("baseline-profile-long")
    st, out = tmp_path / "state", tmp_path / "out"
    st.mkdir()
    for name in ("profile", "bytes", "profile-long", "record-profile-long", "baseline-profile-long", "xsa-check"):
        (st / f"{name}.json").write_text(json.dumps({"name": name}))
    (st / "s-baseline.json").write_text("{}")
    ks.publish(fresh_state(), {"out": out, "state": st, "name": "s"})
    files = sorted(p.name for p in out.iterdir())
    assert "s-baseline-profile-long.json" in files and len(files) == 8, files
    assert json.loads((out / "s-baseline-profile-long.json").read_text()) == {"name": "baseline-profile-long"}


def test_the_record_script_runs_where_it_is_and_starts_before_the_baseline(tmp_path, monkeypatch):
    """record-long and record: the record's own script (RECORD_TRAINER) on each data, the issue's yardstick. They are
    references, so a first call may start them past their estimate before the baseline; without the script, or on a
    CPU, they say why they cannot run; a finished run's time to its first step estimates the next."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    assert plan["record-long"]["data"] == "long" and "data" not in plan["record"]
    cfg = {"data": str(tmp_path / "data"), "data_long": str(tmp_path / "data"), "fa4_site": tmp_path, "smoke": False,
           "record_trainer": tmp_path / "pr1610" / "train_gpt.py", "warmup": 2, "state": tmp_path, "name": "s",
           "carried": False}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")
    state = fresh_state()
    assert ks.blocked(plan["record"], state, cfg) == (f"no record script at {cfg['record_trainer']} (RECORD_TRAINER; "
                                                      "benchmarks/README.md, \"The record's own script\")")
    cfg["record_trainer"].parent.mkdir()
    cfg["record_trainer"].write_text("# the record's script\n")
    assert ks.blocked(plan["record-long"], state, cfg) is None
    assert ks.blocked(plan["record"], state, {**cfg, "smoke": True}) == "the record's script trains on CUDA only"
    est = ks.estimate(plan["record-long"], state)
    assert est > ks.DEFAULTS["record_start_s"]
    assert ks.may_start(plan["record-long"], est, 300, state)  # past its estimate, before the baseline
    assert not ks.may_start(plan["default"], est, 300, state)
    seen = {}

    def record_phase(script, data, out, extra, **kw):
        seen.update(script=script, data=data, out=out, extra=extra, cache=kw["cache_state"])
        return {"complete": True, "time_to_first_step_s": 131.5, "tokens_per_s_preloop": 1.0e6}
    monkeypatch.setattr(ks, "record_phase", record_phase)
    entry = ks.run_step(plan["record-long"], cfg, state, 500.0)
    assert entry["status"] == "done" and state["measured"] == {"record_start_s": 131.5}
    assert seen == {"script": str(cfg["record_trainer"]), "data": cfg["data_long"], "out": str(tmp_path / "s-record-long.json"),
                    "extra": {"ITERS": "24", "WARMUP": "2"}, "cache": "cold (the record's graphs)"}
    state["steps"]["record-long"] = entry
    ks.run_step(plan["record"], cfg, state, 500.0)
    assert seen["cache"].startswith("after record-long: its graphs compiled")
    assert ks.estimate(plan["record"], state) < est


def test_the_record_profile_comes_home_and_stays_out_of_the_configurations(tmp_path, monkeypatch):
    """record-profile-long: record-long under record_profile.py. Its profile is published beside ours; the run's own
    summary (rates the profiler slowed) is no configuration of the ratio table."""
    plan = {s["name"]: s for s in ks.steps(CFG)}
    step = plan["record-profile-long"]
    assert step["kind"] == "record" and step["data"] == "long" and step["profile"]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    cfg = {"data": "d", "data_long": "d-long", "record_trainer": tmp_path / "train_gpt.py", "warmup": 2,
           "state": state_dir, "name": "s", "carried": False, "out": tmp_path / "out"}
    calls = []

    def record_phase(script, data, out, extra, profile_to=None, **kw):
        calls.append((data, Path(out).name, Path(profile_to).name))
        Path(out).write_text(json.dumps({"tokens_per_s_preloop": 9.0e5}))
        Path(out).with_suffix(".log").write_text("the run's log\n")
        phases = {"preloop": {"step": 6}, **({"loop": {"step": 19}} if len(calls) > 1 else {})}
        Path(profile_to).write_text(json.dumps({"phases": phases}))
        return {"complete": True, "time_to_first_step_s": 95.0}
    monkeypatch.setattr(ks, "record_phase", record_phase)
    state = fresh_state()
    failed = ks.run_step(step, cfg, state, 500.0)  # the run ended before step 19's capture
    assert failed["status"] == "failed" and failed["log_tail"] == "the run's log\n"
    entry = ks.run_step(step, cfg, state, 500.0)
    assert entry["status"] == "done" and entry["result"]["profiled"] == ["loop", "preloop"]
    assert state["measured"] == {"record_start_s": 95.0}  # a warm start of the record's script, as any
    assert calls[-1] == ("d-long", "record-profile-long-run.json", "record-profile-long.json")
    ks.publish(state, cfg)
    assert json.loads((tmp_path / "out" / "s-record-profile-long.json").read_text())["phases"]["loop"]["step"] == 19
    assert not (tmp_path / "out" / "s-configs.json").exists() and ks.read_configs(cfg) == {}
