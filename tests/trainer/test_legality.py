"""Legality of the TTT evaluation (trainer-facts §7.9, C1-C4), proven on a tiny random model on the CPU with
the per-position score dump (SCORE_DUMP_PATH): the dump's `step` is the scoring event (batch chunk) of each
target, so "tokens not yet scored" is well defined even across documents, batches and the global-SGD pause."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golfrun.audit.scoredump import PROB_SUM_TOLERANCE
from tests.trainer.ttt_support import V, doc_stream, hparams, random_model, run_ttt, tables

CORRECTOR = {"CORRECTOR_ALPHA": "0.3", "CORRECTOR_ORDERS": "1,2,4"}


@pytest.fixture(scope="module")
def stream():
    return doc_stream()


@pytest.fixture(scope="module")
def originals(tg, stream, tmp_path_factory):
    out = {}
    for name, extra in (("plain", {}), ("corrector", CORRECTOR)):
        out[name] = run_ttt(tg, hparams(tg, **extra), stream, tmp_path_factory.mktemp(name), name)
    return out


def _perturb_after(tokens: torch.Tensor, step: np.ndarray, t0: int, p: int, seed: int = 1) -> torch.Tensor:
    """Replace every non-BOS token that is a target scored at (step, position) >= (t0, p) by another
    non-BOS token; document structure (BOS positions) stays, so the queue does not change."""
    toks = tokens.numpy().copy()
    rng = np.random.default_rng(seed)
    e = np.arange(len(toks) - 1)
    later = (step > t0) | ((step == t0) & (e >= p))
    k = e[later] + 1
    k = k[toks[k] != 1]
    toks[k] = (toks[k] - 2 + rng.integers(1, V - 2, len(k))) % (V - 2) + 2
    return torch.from_numpy(toks)


@pytest.mark.parametrize("mode", ["plain", "corrector"])
@pytest.mark.parametrize("where", ["phase1", "phase2"])
def test_scores_depend_only_on_tokens_scored_before(tg, stream, originals, tmp_path, mode, where):
    """C1/C3: change every token scored at or after (event t0, position p) - p mid-chunk - and nothing
    scored before changes, bit for bit. t0 in phase 2 also covers the global-SGD pause: the phase-2 documents
    scored before t0 depend on the SGD'd base model, which must only have seen phase-1 (scored) documents."""
    entry, _, d = originals[mode]
    step = d["step"]
    assert entry["ttt"]["global_sgd_chunks"] > 0
    steps = np.unique(step[step >= 0])
    p1, p2 = steps[steps < entry["ttt"]["phase2_first_step"]], steps[steps >= entry["ttt"]["phase2_first_step"]]
    assert len(p1) > 4 and len(p2) > 4
    # t0, p: mid-chunk in a document that has a later chunk, so this chunk is also trained on after scoring
    starts = tg.find_documents(stream.numpy())[:, 0]
    doc = np.searchsorted(starts, np.arange(len(step)), side="right") - 1
    phase = p1 if where == "phase1" else p2
    for t0 in np.roll(phase, -(len(phase) // 2)):
        at = np.flatnonzero(step == t0)
        trained = [i for i in at if (step[doc == doc[i]] > t0).any()]
        if trained:
            break
    t0 = int(t0)
    mine = [i for i in trained if doc[i] == doc[trained[0]]]
    p = int(mine[len(mine) // 2])
    assert len(mine) == 8 and mine[0] < p  # a full chunk (TTT_CHUNK_SIZE=8), split by p
    changed_tokens = _perturb_after(stream, step, t0, p)
    h = hparams(tg, **(CORRECTOR if mode == "corrector" else {}))
    _, _, d2 = run_ttt(tg, h, changed_tokens, tmp_path, "perturbed")
    e = np.arange(len(step))
    before = (step >= 0) & ((step < t0) | ((step == t0) & (e < p)))
    after = (step >= 0) & ~before
    assert before.sum() > 20 and after.sum() > 20
    assert np.array_equal(d["nll"][before], d2["nll"][before])
    assert not np.allclose(d["nll"][after], d2["nll"][after])  # the perturbation did matter
    if where == "phase2":
        assert (before & (step > p1.max())).sum() > 0  # post-SGD scores were among the protected ones


def test_every_target_scored_exactly_once(originals):
    """C4: one pass; every target of the trimmed stream is scored once (the dump counts writes)."""
    for name, (entry, _, d) in originals.items():
        assert np.all(d["count"] == 1), name
        assert not np.isnan(d["nll"]).any()
        assert entry["ttt"]["scored_tokens"] == len(d["nll"])


def test_dump_prob_sum_is_one_per_target_with_and_without_corrector(originals):
    """C2 on the whole run, as the score dump shows it: every scored target's distribution - the corrector's
    bias included, added before the softmax - sums to 1 within the audit's tolerance (fp32 rounding only)."""
    for name, (_, _, d) in originals.items():
        dev = np.abs(d["prob_sum"] - 1.0)
        assert d["prob_sum"].dtype == np.float64 and not np.isnan(dev).any(), name
        assert dev.max() <= PROB_SUM_TOLERANCE, (name, dev.max())
        assert dev.max() < 1e-5, (name, dev.max())  # what fp32 gives here (V=96): the tolerance has room


def test_bpb_recomputed_from_dump_equals_reported(originals):
    for name, (entry, lines, d) in originals.items():
        scored = ~np.isnan(d["nll"])
        bpb = d["nll"][scored].sum() / (math.log(2) * d["bytes"][scored].sum())
        loss = d["nll"][scored].mean()
        assert bpb == pytest.approx(entry["val_bpb"], rel=1e-12), name
        assert loss == pytest.approx(entry["val_loss"], rel=1e-12), name
        assert f"quantized_ttt_phased val_loss:{entry['val_loss']:.8f} val_bpb:{entry['val_bpb']:.8f}" in "\n".join(lines)


def test_distribution_normalized_over_full_vocab_with_corrector(tg):
    """C2: the corrector's bias is finite for every token, and the scorer's nll is -log of a softmax over
    all V tokens of the biased logits, which sums to 1."""
    h = hparams(tg)
    model = random_model(tg, h)
    corr = tg.NgramCorrector(2, V, 0.5, [1, 2, 4], torch.device("cpu"))
    rng = np.random.default_rng(0)
    for _ in range(5):
        corr.update(torch.from_numpy(rng.integers(2, 8, (2, 8))), np.array([8, 5]))
    bias = corr.bias(np.array([True, True]))
    assert bias.shape == (2, 1, V) and torch.isfinite(bias).all() and bias.abs().sum() > 0
    enc, dec = model.schedule()
    lora = tg.BatchedLora(h, len(enc) + len(dec), 2, torch.device("cpu"))
    lora.reset(torch.Generator().manual_seed(0))
    x = torch.from_numpy(rng.integers(2, V, (2, 16)))
    y = torch.from_numpy(rng.integers(2, V, (2, 16)))
    with torch.no_grad():
        logits = model.logits_from_hidden(model.hidden_states(x, lora=lora), lora=lora) + bias
        nll, none = tg.ttt_token_nll(model, lora, x, y, bias)
        again, psum = tg.ttt_token_nll(model, lora, x, y, bias, prob_sum=True)
    probs = torch.softmax(logits.double(), dim=-1)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 16, dtype=torch.float64), atol=1e-12)
    assert (probs > 0).all()
    picked = -torch.log(probs.gather(-1, y[..., None]))[..., 0]
    assert torch.allclose(nll.double(), picked, atol=1e-4)
    # the score dump's sum p is read from the distribution the NLL is scored under: same NLL, sum 1
    assert none is None and torch.equal(again, nll)
    assert psum.shape == (2, 16) and (psum.double() - 1).abs().max() <= PROB_SUM_TOLERANCE


def test_alpha_zero_equals_no_corrector(tg, stream, originals, tmp_path):
    """CORRECTOR_ALPHA=0 builds no corrector (as the record): results equal plain TTT exactly, whatever the
    orders; and a corrector forced on with alpha 0 adds an exact zero, so even that path changes nothing."""
    entry, _, d = run_ttt(tg, hparams(tg, CORRECTOR_ALPHA="0", CORRECTOR_ORDERS="3,7"), stream, tmp_path, "a0")
    ref_entry, _, ref = originals["plain"]
    assert entry["val_bpb"] == ref_entry["val_bpb"] and entry["ttt"]["corrector"] is None
    assert np.array_equal(d["nll"], ref["nll"])

    h = hparams(tg, PHASED_TTT_ENABLED="0")
    model = random_model(tg, h)
    tab = tables(tg)
    docs = tg.find_documents(stream.numpy())
    batches, queue = tg.make_ttt_batches(h, docs)
    sums = []
    for corr in (None, tg.NgramCorrector(h.ttt_batch_size, V, 0.0, [1, 2], torch.device("cpu"))):
        ctx = tg.TTTContext(h, model, tg.ttt_token_nll, stream, tab, torch.device("cpu"), corr, None)
        sums.append(torch.stack([tg.ttt_run_batch(ctx, batches[q], q) for q in queue]))
    assert torch.equal(sums[0], sums[1])


def _reference_bias(hist: list[int], uni: np.ndarray, orders: list[int], alpha: float, V: int) -> np.ndarray:
    """§7.8 restated with dicts, the way the record's corrector keeps its state."""
    tables: dict[int, dict[tuple, dict[int, int]]] = {n: {} for n in orders}
    for j, t in enumerate(hist):
        for n in orders:
            ctx = tuple(hist[max(0, j - n + 1):j]) if n > 1 else ()
            tables[n].setdefault(ctx, {}).setdefault(t, 0)
            tables[n][ctx][t] += 1
    logq = np.log(uni / uni.sum())
    beta = logq.copy()
    if hist:
        for n in orders:
            ctx = tuple(hist[max(0, len(hist) - n + 1):]) if n > 1 else ()
            table = tables[n].get(ctx)
            if table is None:
                continue
            T = sum(table.values())
            for v, k in table.items():
                beta[v] += math.log((k + 1) / (T + V)) - logq[v]
    return alpha * beta


def test_corrector_matches_dict_reference(tg):
    """The tensor corrector reproduces the record's semantics: Laplace unigram, summed (not backed-off)
    order contributions, unseen tokens keep the unigram term, contexts shorter at the start of a history,
    state spanning documents of a slot, history growth, reset."""
    orders = [1, 2, 3, 5]
    Vs = 12
    corr = tg.NgramCorrector(3, Vs, 0.3, orders, torch.device("cpu"), cap=8)  # small: the history grows
    rng = np.random.default_rng(3)
    hists = [[], [], []]
    for it in range(12):
        nv = rng.integers(0, 9, 3)
        toks = rng.integers(0, 4, (3, 8))  # few distinct tokens: contexts repeat
        corr.update(torch.from_numpy(toks), nv)
        for s in range(3):
            hists[s] += toks[s, :nv[s]].tolist()
        active = np.array([True, it % 2 == 0, True])
        got = corr.bias(active).numpy()[:, 0, :]
        for s in range(3):
            uni = np.ones(Vs)
            np.add.at(uni, hists[s], 1)
            want = _reference_bias(hists[s], uni, orders, 0.3, Vs) if active[s] else np.zeros(Vs)
            np.testing.assert_allclose(got[s], want, rtol=1e-5, atol=1e-5)
    assert corr.cap > max(len(x) for x in hists) > 8
    corr.reset()
    np.testing.assert_allclose(corr.bias(np.ones(3, bool)).numpy()[:, 0, :], 0.3 * np.log(np.full((3, Vs), 1 / Vs)), rtol=1e-6)
