"""Muon: Newton-Schulz orthogonalization and the update rule on one process."""
import math

import torch


def test_newton_schulz_orthogonalizes(tg):
    torch.manual_seed(0)
    g = torch.randn(3, 32, 96)
    x = tg.newton_schulz5(g, 5).float()
    assert x.shape == g.shape and x.dtype == torch.float32
    s = torch.linalg.svdvals(x)
    # the quintic iteration drives every singular value into roughly [0.7, 1.2]
    assert s.min() > 0.6 and s.max() < 1.25
    tall = tg.newton_schulz5(g.mT, 5).float()
    assert torch.allclose(tall, x.mT, atol=1e-2)  # tall matrices are handled by transposing
    raw = torch.linalg.svdvals(g)
    assert (raw.max() / raw.min()) > 3  # the input was far from orthogonal


def test_muon_single_process_update(tg):
    h = tg.Hyperparameters({"NUM_LAYERS": "4", "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "0"})
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(2, 16, 8))
    w0 = p.detach().clone()
    g = torch.randn(2, 16, 8)
    p.grad = g.clone()
    muon = tg.Muon([("mlp_up_bank", p)], h, rank=0, world=1)
    muon.lr, muon.momentum = 0.1, 0.9
    muon.launch()
    muon.step()
    gb = g.bfloat16()
    buf = gb.clone()  # zero buffer * mu + g
    u = gb + 0.9 * buf
    u = (u.float() / u.float().norm(dim=-1, keepdim=True)).bfloat16()
    upd = tg.newton_schulz5(u, h.muon_backend_steps)
    expected = w0 * (1 - 0.1 * h.muon_wd) - 0.1 * math.sqrt(16 / 8) * upd.float()
    assert torch.allclose(p.detach(), expected, atol=1e-5)
    assert torch.equal(muon.state["mlp_up_bank"], gb)


def test_lr_schedule(tg):
    h = tg.Hyperparameters({})
    assert tg.lr_multiplier(h, 0.0) == 1.0 and tg.lr_multiplier(h, 0.27) == 1.0
    assert abs(tg.lr_multiplier(h, 0.64) - 0.5) < 1e-9 and tg.lr_multiplier(h, 1.0) == 0.0
