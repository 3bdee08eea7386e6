"""Model: record size on the meta device, looping schedule, state-dict keys, Hessian taps, attention."""
import pytest
import torch
import torch.nn.functional as F

TINY = {"VOCAB_SIZE": "512", "NUM_LAYERS": "4", "MODEL_DIM": "64", "EMBEDDING_DIM": "64", "NUM_HEADS": "4",
        "NUM_KV_HEADS": "2", "XSA_LAST_N": "4", "ROPE_DIMS": "8", "NUM_LOOPS": "1", "LOOP_START": "1",
        "LOOP_END": "1", "PARALLEL_START_LAYER": "3"}


def test_record_config_param_count_on_meta(tg):
    h = tg.Hyperparameters({})
    with torch.device("meta"):
        model = tg.GPT(h)
    assert tg.count_params(model) == 35_944_602
    sd = model.state_dict()
    assert sd["qo_bank"].shape == (22, 512, 512) and sd["kv_bank"].shape == (22, 256, 512)
    assert sd["mlp_up_bank"].shape == (11, 2048, 512) and sd["mlp_down_bank"].shape == (11, 512, 2048)
    assert sd["skip_weights"].shape == (8, 512) and sd["skip_gates"].shape == (8, 512)
    assert sd["parallel_post_lambdas"].shape == (11, 2, 2) and sd["parallel_resid_lambdas"].shape == (11, 2)
    expected = {"qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank", "tok_emb.weight", "skip_weights",
                "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas"}
    for i in range(11):
        expected |= {f"blocks.{i}.attn.q_gain", f"blocks.{i}.attn_scale", f"blocks.{i}.mlp_scale",
                     f"blocks.{i}.resid_mix"}
    assert set(sd) == expected  # rotary buffers are not persistent


def test_record_looping_schedule(tg):
    assert tg.layer_schedule(11, 2, 3, 5, looping=True) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    assert tg.layer_schedule(11, 2, 3, 5, looping=False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])


def test_training_dtypes_and_init(tg):
    h = tg.Hyperparameters(TINY)
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    assert m.tok_emb.weight.dtype == torch.bfloat16
    assert m.qo_bank.dtype == torch.float32 and m.blocks[0].resid_mix.dtype == torch.float32
    q = m.qo_bank[0]
    assert torch.allclose(q @ q.T, torch.eye(64), atol=2e-2)  # orthogonal (bf16-rounded)
    assert m.qo_bank[4:].abs().sum() == 0 and m.mlp_down_bank.abs().sum() == 0
    # fp32 masters start from bf16-rounded values, as the record (§4.8)
    assert torch.all(m.parallel_resid_lambdas == torch.tensor(1.1).bfloat16().float()) and torch.all(m.blocks[2].attn.q_gain == 5.0)


def _trained_like(tg, h):
    torch.manual_seed(0)
    m = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():  # make the zero-initialized projections non-trivial
        m.qo_bank[4:].normal_(std=0.05)
        m.mlp_down_bank.normal_(std=0.05)
    return m.eval()


def test_hessian_taps_per_application(tg):
    h = tg.Hyperparameters(TINY)
    m = _trained_like(tg, h)
    m.looping = True
    seen = []
    m.hessian_tap = lambda name, x: seen.append((name, tuple(x.shape)))
    ids = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        m.forward_logits(ids)
    names = [n for n, _ in seen]
    # schedule with looping: [0, 1] + [1, 2, 3]; layer 1 runs twice
    assert names.count("blocks.1.attn.qkv_in") == 2 and names.count("blocks.0.mlp.proj") == 1
    assert names.count("tok_emb") == 1 and names[-1] == "tok_emb"
    shapes = dict(seen)
    assert shapes["blocks.3.attn.proj"] == (2, 16, 64) and shapes["blocks.3.mlp.proj"] == (2, 16, 256)
    assert len(set(names)) == 4 * 4 + 1


def test_packed_attention_matches_per_document(tg):
    """A packed forward with cu_seqlens equals running each document on its own."""
    h = tg.Hyperparameters(TINY)
    m = _trained_like(tg, h)
    tg.select_attention(torch.device("cpu"))
    a = torch.randint(2, 512, (1, 10))
    b = torch.randint(2, 512, (1, 6))
    packed = torch.cat([a, b], dim=1)
    cu = torch.tensor([0, 10, 16, 16], dtype=torch.int32)
    with torch.no_grad():
        lp = m.forward_logits(packed, cu, 10)
        la = m.forward_logits(a)
        lb = m.forward_logits(b)
    # RoPE positions are buffer positions (quirk 11.3): equal up to float rounding only
    assert torch.allclose(lp[:, :10], la, atol=1e-4)
    assert torch.allclose(lp[:, 10:], lb, atol=1e-4)
    loss = m(packed, torch.roll(packed, -1, 1), cu, 10)
    assert torch.isfinite(loss)


def test_xsa_removes_own_value_component(tg):
    h = tg.Hyperparameters(TINY)
    m = _trained_like(tg, h)
    outs = {}
    m.hessian_tap = lambda name, x: outs.setdefault(name, x)
    ids = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        m.forward_logits(ids)
        a = outs["blocks.0.attn.qkv_in"]
        v = F.linear(a, m.kv_bank[4 + 0]).view(1, 8, 2, 16)
    y = outs["blocks.0.attn.proj"].view(1, 8, 2, 2, 16)
    dots = (y * F.normalize(v, dim=-1).unsqueeze(3)).sum(-1)
    assert dots.abs().max() < 1e-4


def test_local_block_attention_equals_full_mask(tg):
    """The CPU path's O(T*M) blocked attention equals the full block-diagonal mask."""
    torch.manual_seed(0)
    T, M = 50, 8
    q, k, v = torch.randn(1, T, 4, 16), torch.randn(1, T, 2, 16), torch.randn(1, T, 2, 16)
    cu = torch.tensor([0, 5, 13, 21, 29, 30, 38, 46, 50, 50, 50], dtype=torch.int32)
    tg.select_attention(torch.device("cpu"))
    blocked = tg._local_block_attention(q, k, v, cu, M)
    full = tg.attend(q, k, v, cu, 0)  # max_seqlen 0 forces the full mask
    assert torch.allclose(blocked, full, atol=1e-5)


@pytest.mark.parametrize("num_loops", ["0", "2"])
def test_both_compiled_graphs_turn_off_mix_order_reductions(tg, monkeypatch, num_loops):
    """On CUDA, compile_model compiles the plain and the looped graph with Inductor's mix-order reductions off:
    torch 2.11 over-fuses them into kernels that took 62 ms (plain) and 72 + 66 ms (looped) of an H100 step.
    torch.compile is recorded, not run, so no GPU is needed; compile_model only wraps the model."""
    import torch._inductor.config as inductor_config
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (calls.append(kw), model)[1])
    h = tg.Hyperparameters({**TINY, "NUM_LOOPS": num_loops})
    model = tg.build_model(h, torch.device("cpu"))
    fn, compiled = tg.compile_model(h, model, torch.device("cuda"))
    assert compiled and len(calls) == (1 if num_loops == "0" else 2)
    assert hasattr(inductor_config.triton, "mix_order_reduction")  # the option this torch has
    for kw in calls:
        assert kw["options"] == {"triton.mix_order_reduction": False} and kw["fullgraph"] and kw["dynamic"] is False
