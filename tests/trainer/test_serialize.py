"""Serialization section of train_gpt.py on a tiny real GPT: GPTQ against round-to-nearest, the exact
.ptz round trip, the record's log lines, byte shuffle, compressors and the code-size accounting."""
from __future__ import annotations

import base64
import lzma
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY_ENV

CPU = torch.device("cpu")
VOCAB, LAYERS, CALIB_BATCHES = 512, 4, 3


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_h(tg, artifact_dir: Path, **extra: str):
    env = dict(TINY_ENV, ARTIFACT_DIR=str(artifact_dir), RUN_ID="ser")
    env.update(extra)
    return tg.Hyperparameters(environ=env)


def trained_like_model(tg, h):
    """The tiny model with weights shaped like a trained one: the zero-initialised output projections
    get values, and the embedding is low-rank plus noise so that activations are correlated (an
    untrained model's near-isotropic activations leave GPTQ nothing to exploit)."""
    torch.manual_seed(0)
    model = tg.build_model(h, CPU)
    with torch.no_grad():
        for bank in (model.qo_bank, model.kv_bank, model.mlp_up_bank, model.mlp_down_bank):
            bank.normal_(0.0, bank.shape[-1] ** -0.5)
        d = model.tok_emb.weight.shape[1]
        low = torch.randn(VOCAB, 6) @ torch.randn(6, d)
        model.tok_emb.weight.copy_(low + 0.2 * torch.randn(VOCAB, d))
        model.skip_gates.normal_(0.0, 1.0)
    model.looping = h.num_loops > 0
    return model


def calib_batches(n: int = CALIB_BATCHES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randint(0, VOCAB, (2, 128), generator=g) for _ in range(n)]


@pytest.fixture
def small_matrices(tg, monkeypatch):
    """At tiny widths every block matrix is below the record's 65,536-element threshold; lower it so
    that all 6 matrices per layer go through int6 GPTQ as at the record's size."""
    monkeypatch.setattr(tg, "QUANT_MIN_NUMEL", 1024)


def hessian_error(w: torch.Tensor, w_hat: torch.Tensor, hess: torch.Tensor) -> float:
    """||(W - W_hat) X||^2 / N = trace(D H D^T) with H = X^T X / N."""
    d = (w.float() - w_hat.float()).double()
    return float(((d @ hess.double()) * d).sum())


def test_gptq_beats_round_to_nearest_on_real_hessians(tg, tmp_path, small_matrices):
    h = make_h(tg, tmp_path)
    model = trained_like_model(tg, h)
    hessians = tg.collect_hessians(model, calib_batches(), CPU)
    assert len(hessians) == 6 * LAYERS + 1
    assert model.hessian_tap is None  # the tap is removed again
    sd = tg.unbank_state_dict({k: v.detach() for k, v in model.state_dict().items()})
    total_gptq = total_rtn = 0.0
    for name, hess in hessians.items():
        w = sd[name].float()
        bits, k = tg.quant_spec(h, name, sd[name])
        q, scale = tg.gptq_quantize(w, hess, bits, k)
        assert q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (w.shape[0],)
        limit = 2 ** (bits - 1) - 1
        assert int(q.abs().max()) <= limit
        s = scale.float()[:, None]
        rtn = torch.clamp(torch.round(w / s), -limit, limit) * s
        e_gptq, e_rtn = hessian_error(w, q.float() * s, hess), hessian_error(w, rtn, hess)
        assert e_gptq < e_rtn, name
        total_gptq += e_gptq
        total_rtn += e_rtn
    print(f"GPTQ/RTN Hessian-weighted error: {total_gptq / total_rtn:.3f}")
    assert total_gptq / total_rtn < 0.7, total_gptq / total_rtn


def test_gptq_handles_dead_columns_and_zero_rows(tg):
    torch.manual_seed(1)
    x = torch.randn(256, 32) @ torch.randn(32, 32)
    x[:, 5] = 0.0  # an input feature that never fires
    hess = x.T @ x / 256
    w = torch.randn(16, 32)
    w[3] = 0.0  # a zero row (the zero-initialised projections of an untrained model)
    q, scale = tg.gptq_quantize(w, hess, 6, 12.85)
    assert torch.all(q[:, 5] == 0)
    assert torch.all(q[3] == 0) and float(scale[3]) > 0
    assert torch.isfinite(scale.float()).all()


def serialize_tiny(tg, tmp_path, compressor: str = "brotli"):
    h = make_h(tg, tmp_path, COMPRESSOR=compressor)
    model = trained_like_model(tg, h)
    lines: list[str] = []
    info = tg.serialize(h, model, calib_batches(), lines.append, 0, 1, CPU)
    return h, model, lines, info


@pytest.mark.parametrize("compressor", ["brotli", "lzma"])
def test_round_trip_is_exact(tg, tmp_path, small_matrices, compressor):
    h, model, _, info = serialize_tiny(tg, tmp_path, compressor)
    # The same quantization done in memory (Hessians and GPTQ are deterministic on the CPU).
    hessians = tg.collect_hessians(model, calib_batches(), CPU)
    unbanked = tg.unbank_state_dict({k: v.detach() for k, v in model.state_dict().items()})
    result, meta = tg.quantize_state_dict(h, unbanked, hessians, lambda _: None)
    stored, stored_meta = tg.load_quantized(info["path"])
    assert stored_meta == meta
    assert stored.keys() == result.keys()
    for key in result:
        assert stored[key].dtype == result[key].dtype and torch.equal(stored[key], result[key]), key
    expected = tg.rebank_state_dict(tg.dequantize_state_dict(result, meta))
    loaded = tg.deserialize(h, info["path"], CPU)
    fresh = tg.build_model(h, CPU).state_dict()
    assert loaded.keys() == fresh.keys() == expected.keys()
    for key in loaded:
        assert loaded[key].dtype == fresh[key].dtype, key  # fp32 banks and controls, bf16 embedding
        assert torch.equal(loaded[key], expected[key]), key
    in_memory, from_file = tg.build_model(h, CPU), tg.build_model(h, CPU)
    tg.load_state_into(in_memory, expected)
    tg.load_state_into(from_file, loaded)
    ids = calib_batches(1)[0]
    with torch.no_grad():
        for m in (in_memory, from_file, model):
            m.eval()
            m.looping = True
        out_mem, out_file = in_memory.forward_logits(ids), from_file.forward_logits(ids)
        out_orig = model.forward_logits(ids)
    assert torch.equal(out_mem, out_file)
    # quantized, so not equal to the original, but close: the quantization is not garbage
    assert not torch.equal(out_mem, out_orig)
    rel = float((out_mem - out_orig).norm() / out_orig.norm())
    assert rel < 0.2, rel


def test_log_lines_match_the_record_formats(tg, tmp_path, small_matrices):
    h, _, lines, info = serialize_tiny(tg, tmp_path)
    assert len(lines) == 11, lines
    pt_bytes = Path(h.model_path).stat().st_size
    ptz_bytes = Path(h.quantized_model_path).stat().st_size
    code = info["code_bytes"]
    raw = len(Path(tg.__file__).read_bytes())
    assert lines[0] == f"Serialized model: {pt_bytes} bytes"
    assert lines[1] == f"Code size (uncompressed): {raw} bytes"
    assert lines[2] == f"Code size (compressed): {code} bytes"
    assert lines[3] == "GPTQ:collecting Hessians from calibration data..."
    assert re.fullmatch(rf"GPTQ:collected {6 * LAYERS + 1} Hessians in \d+\.\ds", lines[4])
    assert lines[5:9] == [
        "Quantized weights:",
        "  gptq (int6): blocks.attn.c_k.weight, blocks.attn.c_q.weight, blocks.attn.c_v.weight, "
        "blocks.attn.proj.weight, blocks.mlp.fc.weight, blocks.mlp.proj.weight",
        "  gptq (int8): tok_emb.weight",
        "  passthrough (float16): blocks.attn.q_gain, blocks.attn_scale, blocks.mlp_scale, "
        "blocks.resid_mix, parallel_post_lambdas, parallel_resid_lambdas, skip_gates, skip_weights",
    ]
    assert lines[9] == f"Serialized model quantized+brotli: {ptz_bytes} bytes"
    assert lines[10] == f"Total submission size quantized+brotli: {ptz_bytes + code} bytes"
    assert info == {"path": h.quantized_model_path, "model_bytes": ptz_bytes, "code_bytes": code,
                    "total_bytes": ptz_bytes + code, "compressor": "brotli"}
    # final_model.pt holds the banked full-precision state dict
    saved = torch.load(h.model_path, map_location="cpu", weights_only=True)
    assert "qo_bank" in saved and saved["tok_emb.weight"].dtype == torch.bfloat16


def test_record_classes_at_full_size(tg, tmp_path):
    """The record's shapes (built on the meta device): 66 int6 matrices, the int8 embedding, and
    passthrough for everything else — 67 Hessian-backed tensors as in the record's log."""
    h = tg.Hyperparameters(environ={"ARTIFACT_DIR": str(tmp_path)})
    with torch.device("meta"):
        model = tg.GPT(h)
    sd = tg.unbank_state_dict(model.state_dict())
    specs = {name: tg.quant_spec(h, name, t) for name, t in sd.items()}
    assert sum(s == (6, 12.85) for s in specs.values()) == 66
    assert [n for n, s in specs.items() if s == (8, 20.0)] == ["tok_emb.weight"]
    assert sd["blocks.3.attn.proj.weight"].shape == (512, 512)
    assert sd["blocks.10.attn.c_v.weight"].shape == (256, 512)
    assert sd["blocks.0.mlp.proj.weight"].shape == (512, 2048)
    assert all(t.numel() <= 65536 for n, t in sd.items() if specs[n] is None)


def test_unbank_names_and_rebank_inverse(tg):
    L = 3
    sd = {"qo_bank": torch.arange(2 * L, dtype=torch.float32).view(2 * L, 1, 1).expand(2 * L, 4, 4).clone(),
          "kv_bank": torch.arange(2 * L, dtype=torch.float32).view(2 * L, 1, 1).expand(2 * L, 2, 4).clone(),
          "mlp_up_bank": torch.randn(L, 8, 4), "mlp_down_bank": torch.randn(L, 4, 8), "skip_weights": torch.ones(2)}
    flat = tg.unbank_state_dict(sd)
    assert len(flat) == 6 * L + 1
    assert float(flat["blocks.1.attn.c_q.weight"][0, 0]) == 1.0
    assert float(flat["blocks.1.attn.proj.weight"][0, 0]) == L + 1
    assert float(flat["blocks.2.attn.c_v.weight"][0, 0]) == L + 2
    back = tg.rebank_state_dict(flat)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_ptz_is_byte_shuffled_inside_the_compressor(tg, tmp_path, small_matrices):
    _, _, _, info = serialize_tiny(tg, tmp_path, "lzma")
    blob = Path(info["path"]).read_bytes()
    assert blob.startswith(b"\xfd7zXZ\x00")  # an xz stream
    assert lzma.decompress(blob)[:5] == b"BSHF\x02"
    assert tg.decompress_bytes(blob)[:5] == b"BSHF\x02"


def test_byte_shuffle(tg):
    assert tg.byte_shuffle(b"abcdefg") == b"BSHF\x02acegbdf"
    data = bytes(torch.randint(0, 256, (1001,), dtype=torch.uint8).tolist())
    assert tg.byte_unshuffle(tg.byte_shuffle(data)) == data
    assert tg.byte_unshuffle(tg.byte_shuffle(b"")) == b""
    with pytest.raises(ValueError, match="BSHF"):
        tg.byte_unshuffle(b"PK\x03\x04not shuffled")


def test_bad_compressor_is_a_clear_error(tg, tmp_path):
    with pytest.raises(ValueError, match="COMPRESSOR='zstd'"):
        make_h(tg, tmp_path, COMPRESSOR="zstd")
    h = make_h(tg, tmp_path)
    h.compressor = "zstd"  # past the start-up check: serialize refuses before quantizing,
    with pytest.raises(ValueError, match="COMPRESSOR='zstd'"):
        tg.serialize(h, tg.build_model(h, CPU), calib_batches(1), lambda _: None, 0, 1, CPU)
    assert Path(h.model_path).exists()  # but after saving the trained weights
    assert not Path(h.quantized_model_path).exists()


def test_brotli_missing_is_an_error_not_a_switch(tg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "brotli", None)  # makes `import brotli` fail
    h = make_h(tg, tmp_path)
    with pytest.raises(RuntimeError, match="brotli package.*COMPRESSOR=lzma"):
        tg.serialize(h, tg.build_model(h, CPU), calib_batches(1), lambda _: None, 0, 1, CPU)
    assert Path(h.model_path).exists() and not Path(h.quantized_model_path).exists()
    with pytest.raises(RuntimeError, match="brotli"):
        tg.decompress_bytes(b"\x1b\x00not xz")


def test_code_size_counts_the_minified_launcher(tg, tmp_path):
    import brotli

    lines: list[str] = []
    counted = tg.code_size_bytes(make_h(tg, tmp_path), lines.append)
    source = Path(tg.__file__).read_text(encoding="utf-8")
    assert lines == [f"Code size (uncompressed): {len(source.encode())} bytes",
                     f"Code size (compressed): {counted} bytes"]
    assert counted < len(source.encode()) // 2
    launcher = tg.code_launcher("print('hi')\n", brotli)
    first, second = launcher.splitlines()
    assert first == "import brotli as B,base64 as A"
    payload = second.split('"')[1]
    assert brotli.decompress(base64.b85decode(payload)) == b"print('hi')\n"
    assert len(launcher) == 67 + len(payload)  # the record's launcher text is 67 bytes


def test_minified_trainer_is_valid_python(tg):
    """The counted size is only honest if the minified source still compiles."""
    import python_minifier

    source = Path(tg.__file__).read_text(encoding="utf-8")
    mini = python_minifier.minify(source, rename_locals=False, rename_globals=False,
                                  hoist_literals=False, remove_literal_statements=True)
    compile(mini, "train_gpt.min.py", "exec")
    assert "def serialize(" in mini and "Code size (compressed)" in mini


def test_code_size_without_minifier_counts_raw_bytes(tg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "python_minifier", None)
    lines: list[str] = []
    counted = tg.code_size_bytes(make_h(tg, tmp_path), lines.append)
    raw = len(Path(tg.__file__).read_bytes())
    assert counted == raw
    assert lines == ["code_size: python_minifier not installed, counting the raw source bytes",
                     f"Code size (uncompressed): {raw} bytes", f"Code size (compressed): {raw} bytes"]
