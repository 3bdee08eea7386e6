"""Test-time training in train_gpt.py: documents, batches, queue and rank assignment, adapters, and the
whole evaluation as a real subprocess (eval-only on the tiny trained artifact, 1 process and 2 processes
under torchrun/gloo) with the log lines of trainer-facts §8.1, results.json and the score dumps."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from golfrun.audit.scoredump import PROB_SUM_TOLERANCE, audit_dump
from tests.trainer.conftest import read_results, run_trainer
from tests.trainer.ttt_support import doc_stream, hparams, random_model, run_ttt


def test_documents_include_next_bos_and_cover_every_target(tg):
    toks = np.array([1, 5, 6, 1, 7, 1, 1, 8, 9, 4])
    docs = tg.find_documents(toks)
    assert docs.tolist() == [[0, 4], [3, 3], [5, 2], [6, 4]]
    assert int((docs[:, 1] - 1).sum()) == len(toks) - 1
    # a stream that does not start with BOS still has every target in one document
    docs = tg.find_documents(np.array([5, 6, 1, 7, 8]))
    assert docs.tolist() == [[0, 3], [2, 3]]
    # a trailing lone BOS has no target
    assert tg.find_documents(np.array([1, 5, 1])).tolist() == [[0, 3]]


def test_doc_limit_and_fraction(tg):
    stream = doc_stream(30)
    docs = tg.find_documents(stream.numpy())
    assert len(tg.select_documents(hparams(tg, TTT_DOC_LIMIT=5), docs)) == 5
    # VAL_DOC_FRACTION cuts the stream to whole documents drawn with VAL_DOC_SEED (else SEED)
    h = hparams(tg, VAL_DOC_FRACTION=0.5, VAL_DOC_SEED=3, EVAL_SEQ_LEN=8)
    a = tg.subset_validation(h, stream)
    assert torch.equal(a, tg.subset_validation(hparams(tg, VAL_DOC_FRACTION=0.5, VAL_DOC_SEED=3, EVAL_SEQ_LEN=8,
                                                       SEED=9), stream))  # SEED does not matter
    assert not torch.equal(a, tg.subset_validation(hparams(tg, VAL_DOC_FRACTION=0.5, VAL_DOC_SEED=4,
                                                           EVAL_SEQ_LEN=8), stream))
    assert (a.numel() - 1) % 8 == 0
    original = {tuple(stream[s:s + n - 1].tolist()) for s, n in docs.tolist()}
    kept = tg.find_documents(a.numpy())
    whole = [tuple(a[s:s + n - 1].tolist()) for s, n in kept.tolist()[:-1]]  # the last may be trimmed
    assert len(kept) in (15, 16) and all(d in original for d in whole)
    starts = [next(s for s, n in docs.tolist() if tuple(stream[s:s + n - 1].tolist()) == d) for d in whole]
    assert starts == sorted(starts)  # stream order kept
    assert torch.equal(tg.subset_validation(hparams(tg), stream), stream)  # 1.0: the whole stream


def test_batches_sorted_by_length_and_queue_longest_first(tg):
    docs = tg.find_documents(doc_stream(18).numpy())
    h = hparams(tg)
    batches, queue = tg.make_ttt_batches(h, docs)
    lens = np.concatenate([b[:, 1] for b in batches])
    assert np.all(np.diff(lens) >= 0) and sum(map(len, batches)) == len(docs)
    assert all(len(b) == h.ttt_batch_size for b in batches[:-1])
    maxes = [int(batches[q][:, 1].max()) for q in queue]
    assert maxes == sorted(maxes, reverse=True) and sorted(queue) == list(range(len(batches)))
    _, only = tg.make_ttt_batches(hparams(tg, TTT_EVAL_BATCHES="3,0"), docs)
    assert only == [0, 3]
    with pytest.raises(ValueError, match="TTT_EVAL_BATCHES"):
        tg.make_ttt_batches(hparams(tg, TTT_EVAL_BATCHES="99"), docs)


def test_static_assignment_is_deterministic_and_balanced(tg):
    costs = [100, 90, 80, 70, 10, 10, 10, 5]
    owner = tg.assign_batches(costs, 3)
    assert owner == tg.assign_batches(costs, 3)
    load = [sum(c for c, o in zip(costs, owner) if o == r) for r in range(3)]
    assert max(load) - min(load) <= max(costs) and set(owner) == {0, 1, 2}
    assert tg.assign_batches(costs, 1) == [0] * len(costs)


def test_zero_adapters_leave_the_model_unchanged_and_lora_none_is_the_plain_path(tg):
    """B = 0 at initialisation: the adapted forward equals the plain one. Every layer application has its own
    slot (17 in the record's looped schedule), and each kind can be switched off."""
    h = hparams(tg)
    model = random_model(tg, h)
    enc, dec = model.schedule()
    lora = tg.BatchedLora(h, len(enc) + len(dec), 3, torch.device("cpu"))
    lora.reset(torch.Generator().manual_seed(0))
    assert lora.a["q"].shape[:2] == (len(enc) + len(dec), 3) and lora.a["head"].shape[0] == 1
    x = torch.randint(2, h.vocab_size, (3, 16))
    with torch.no_grad():
        plain = model.forward_logits(x)
        adapted = model.logits_from_hidden(model.hidden_states(x, lora=lora), lora=lora)
        assert torch.equal(plain, adapted)
        for p in lora.b.values():
            p.normal_()
        moved = model.logits_from_hidden(model.hidden_states(x, lora=lora), lora=lora)
    assert not torch.allclose(plain, moved)
    slim = tg.BatchedLora(hparams(tg, TTT_K_LORA=0, TTT_MLP_LORA=0, TTT_O_LORA=0), 2, 1, torch.device("cpu"))
    assert sorted(slim.a.keys()) == ["head", "q", "v"]


def test_adapter_init_depends_on_seed_and_batch_not_rank(tg):
    h = hparams(tg)
    a = tg.BatchedLora(h, 2, 2, torch.device("cpu"))
    b = tg.BatchedLora(h, 2, 2, torch.device("cpu"))
    a.reset(tg.ttt_adapter_generator(h, torch.device("cpu"), 7))
    b.reset(tg.ttt_adapter_generator(h, torch.device("cpu"), 7))
    assert torch.equal(a.a["q"], b.a["q"])
    b.reset(tg.ttt_adapter_generator(h, torch.device("cpu"), 8))
    assert not torch.equal(a.a["q"], b.a["q"])


def test_bad_ttt_settings_fail_at_start(tg):
    for env, needle in (({"TTT_OPTIMIZER": "lion"}, "TTT_OPTIMIZER"), ({"CORRECTOR_ORDERS": "a,b"}, "CORRECTOR_ORDERS"),
                        ({"VAL_DOC_FRACTION": "0"}, "VAL_DOC_FRACTION"), ({"TTT_CHUNK_SIZE": "64"}, "TTT_EVAL_SEQ_LEN")):
        with pytest.raises(ValueError, match=needle):
            hparams(tg, **env)


@pytest.mark.parametrize("n_docs", [19, 17])
def test_compiled_ttt_compiles_nothing_inside_the_timer(tg, tmp_path, n_docs):
    """The TTT forward through torch.compile (dynamo with the eager backend: the same guards and graph
    breaks as inductor, without code generation) on a queue whose longest batch has fewer rows (3, then 1)
    than TTT_BATCH_SIZE=4: the warm-up covers every shape, so no graph is compiled on the clock, and the
    score equals the uncompiled run's."""
    stream = doc_stream(n_docs)
    h = hparams(tg, TTT_DEBUG_BYPASS="")
    plain, _, _ = run_ttt(tg, h, stream, tmp_path, "plain")
    assert plain["ttt"]["compiled"] is False and plain["ttt"]["graphs_compiled_in_timer"] is None
    entry, lines, _ = run_ttt(tg, hparams(tg, TTT_DEBUG_BYPASS=""), stream, tmp_path, "compiled", backend="eager")
    assert entry["ttt"]["compiled"] is True
    assert entry["ttt"]["graphs_compiled_in_timer"] == 0, lines
    assert not any("WARNING" in l for l in lines)
    assert entry["val_bpb"] == pytest.approx(plain["val_bpb"], rel=1e-6)


def test_batch_rows_are_symbolic_except_one(tg):
    """One graph serves every batch of two or more rows (the LoRA weights are plain tensors, so their batch
    dimension is symbolic); a one-row batch specializes and compiles its own, which is why the warm-up
    runs every row count of the queue. graphs_compiled sees both."""
    torch.set_num_threads(1)
    h = hparams(tg)
    model = random_model(tg, h)
    model.looping = True
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    enc, dec = model.schedule()
    fwd = tg.compile_ttt_forward("eager")

    def call(rows: int, width: int) -> int:
        before = tg.graphs_compiled()
        lora = tg.BatchedLora(h, len(enc) + len(dec), rows, torch.device("cpu"))
        lora.reset(torch.Generator().manual_seed(0))
        x = torch.randint(2, h.vocab_size, (rows, width))
        fwd(model, lora, x, x, torch.zeros(rows, 1, h.vocab_size))[0].mean().backward()
        return tg.graphs_compiled() - before

    assert call(4, 8) == 1
    # rows equal to the LoRA rank (4) at the first call must not fuse the two dimensions (duck sizing off)
    assert call(3, 16) == 0 and call(2, 24) == 0 and call(5, 8) == 0
    assert call(1, 8) == 1


# ---- the trainer as a subprocess --------------------------------------------------------------------

TTT_ENV = {
    "TTT_ENABLED": "1", "TTT_LORA_RANK": "8", "TTT_CHUNK_SIZE": "32", "TTT_EVAL_SEQ_LEN": "128",
    "TTT_BATCH_SIZE": "16", "PHASED_TTT_ENABLED": "1", "PHASED_TTT_PREFIX_DOCS": "24", "TTT_DOC_LIMIT": "64",
    "GLOBAL_TTT_CHUNK_TOKENS": "512", "GLOBAL_TTT_BATCH_SEQS": "2", "CORRECTOR_ALPHA": "0.1",
    "CORRECTOR_ORDERS": "2,4", "SLIDING_WINDOW_ENABLED": "1", "EVAL_STRIDE": "64",
}
TTT_LINES = [
    r"ttt_lora:warming up compile",
    r"ttt_lora:compile warmup done \(\d+\.\ds\)",
    r"",
    r"beginning TTT eval timer",
    r"corrector: alpha=0\.1 orders=\[2, 4\]",
    r"ttt_phased: total_docs:64 prefix_docs:24 suffix_docs:40",
]
PATTERNS = {
    "ttp": r"ttp: b\d+/\d+ bl:\d+\.\d{4} bb:\d+\.\d{4} rl:\d+\.\d{4} rb:\d+\.\d{4} dl:\d+-\d+ gd:[01]",
    "ttpp": r"ttpp: pd:32 gd:24 t:\d+\.\ds",
    "tttg": r"tttg: c\d+/\d+ lr:\d\.\d{6} t:\d+\.\ds",
    "ttpr": r"ttpr: t:\d+\.\ds",
    "final": r"quantized_ttt_phased val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8} eval_time:\d+ms",
    "total": r"total_eval_time:\d+\.\ds",
}


def _dump_bpb(path) -> tuple[float, float, np.ndarray]:
    with np.load(path) as z:
        nll, nbytes, count = z["nll"], z["bytes"], z["count"]
    s = ~np.isnan(nll)
    return nll[s].mean(), nll[s].sum() / (math.log(2) * nbytes[s].sum()), count


@pytest.fixture(scope="module")
def ttt_one(tiny_data, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ttt_one")
    art = tiny_run[0]
    extra = dict(TTT_ENV, EVAL_ONLY_QUANTIZED_PATH=str(art / "final_model.int6.ptz"),
                 SCORE_DUMP_PATH=str(out / "dump" / "scores.npz"), VAL_CHUNKS="8")
    return out, run_trainer(tiny_data, out, extra)


def test_ttt_run_log_lines_results_and_dumps(ttt_one):
    out, proc = ttt_one
    lines = proc.stdout.splitlines()
    i = lines.index("ttt_lora:warming up compile")
    for pat, line in zip(TTT_LINES, lines[i:i + len(TTT_LINES)]):
        assert re.fullmatch(pat, line), (pat, line)
    for name, pat in PATTERNS.items():
        assert any(re.fullmatch(pat, l) for l in lines), name
    assert lines.index(next(l for l in lines if l.startswith("ttpp:"))) < lines.index(next(l for l in lines if l.startswith("ttpr:")))
    res = read_results(out)
    final = res["final"]
    assert final["label"] == "quantized_ttt_phased" and res["evals"][-1] == final
    t = final["ttt"]
    assert t["global_sgd_docs"] == 24 and t["global_sgd_chunks"] > 0 and t["corrector"]["orders"] == [2, 4]
    assert t["warmup_s"] > 0 and t["scored_tokens"] > 0 and t["corrector"]["seconds_max_rank"] >= 0
    # every evaluation mode wrote a dump whose recomputed score equals the reported one
    labels = {e["label"]: e for e in res["evals"]}
    assert set(labels) == {"diagnostic quantized", "diagnostic quantized_sliding_window", "quantized_ttt_phased"}
    for label, e in labels.items():
        loss, bpb, count = _dump_bpb(out / "dump" / f"scores.{label.replace(' ', '_')}.npz")
        assert bpb == pytest.approx(e["val_bpb"], rel=1e-10) and loss == pytest.approx(e["val_loss"], rel=1e-10)
        assert count.max() == 1
        # VAL_CHUNKS=8: the chunk sums add up to the score and to the dump's scored targets
        chunks = e["chunks"]
        assert len(chunks["nll"]) == len(chunks["targets"]) == len(chunks["bytes"]) == 8
        assert sum(chunks["targets"]) == count.sum()
        assert sum(chunks["nll"]) / (math.log(2) * sum(chunks["bytes"])) == pytest.approx(e["val_bpb"], rel=1e-10)
    # the diagnostics score every document, so every chunk; TTT_DOC_LIMIT=64 scores a prefix of the stream
    assert all(t > 0 for t in labels["diagnostic quantized_sliding_window"]["chunks"]["targets"])
    ttt_targets = labels["quantized_ttt_phased"]["chunks"]["targets"]
    assert ttt_targets[0] > 0 and ttt_targets[-1] == 0
    # and golfrun's audit passes each on the recomputed score and on every scored distribution summing to 1
    # (TTT's with the n-gram corrector on)
    for label, e in labels.items():
        dump = out / "dump" / f"scores.{label.replace(' ', '_')}.npz"
        found = {f.check: f for f in audit_dump(dump, e["val_bpb"], None)}
        assert found["normalised"].ok is True and found["normalised"].observed < 1e-5, found["normalised"]
        assert found["dump_matches_score"].ok is True
    _, bpb, count = _dump_bpb(out / "dump" / "scores.npz")
    # TTT_DOC_LIMIT=64: the first 64 documents, a prefix of the stream, every target of it scored once
    k = t["scored_tokens"]
    assert bpb == final["val_bpb"] and np.all(count[:k] == 1) and np.all(count[k:] == 0)


def test_two_process_ttt_matches_one_process(tiny_data, tiny_run, ttt_one, tmp_path):
    """torchrun --nproc_per_node=2 (gloo): the static assignment splits the queue, every document is scored
    once, and each document's computation does not depend on its rank (adapter init from SEED and batch
    index). The corrector state is per rank and slot (record semantics), so it is off here. Global SGD as
    the record is not world-size invariant by design (one optimizer step per rank micro-batch; a document's
    attention continues across the sequences of one rank's buffer but not across ranks), so this run uses
    the settings under which 1 and 2 ranks do the same math: every sequence its own attention segment
    (GLOBAL_TTT_RESPECT_DOC_BOUNDARIES=0) and one micro-batch per chunk. What is left is float rounding of
    the gradient all-reduce. Stated tolerance: val_bpb within 1e-5 relative."""
    art = tiny_run[0]
    base = dict(TTT_ENV, CORRECTOR_ALPHA="0", SLIDING_WINDOW_ENABLED="0", TTT_ONLY_EVAL="1", VAL_CHUNKS="8",
                GLOBAL_TTT_RESPECT_DOC_BOUNDARIES="0", GLOBAL_TTT_BATCH_SEQS="4",
                EVAL_ONLY_QUANTIZED_PATH=str(art / "final_model.int6.ptz"))
    one, two = tmp_path / "one", tmp_path / "two"
    run_trainer(tiny_data, one, dict(base, SCORE_DUMP_PATH=str(one / "s.npz")))
    proc = run_trainer(tiny_data, two, dict(base, SCORE_DUMP_PATH=str(two / "s.npz")), nproc=2)
    r1, r2 = read_results(one), read_results(two)
    assert r2["world_size"] == 2 and [e["label"] for e in r2["evals"]] == ["quantized_ttt_phased"]
    assert "ttt_only_eval: skipping" in proc.stdout
    assert r2["final"]["val_bpb"] == pytest.approx(r1["final"]["val_bpb"], rel=1e-5)
    _, _, c1 = _dump_bpb(one / "s.npz")
    _, bpb2, c2 = _dump_bpb(two / "s.npz")
    k = r1["final"]["ttt"]["scored_tokens"]
    assert r2["final"]["ttt"]["scored_tokens"] == k
    assert np.all(c1[:k] == 1) and np.all(c2[:k] == 1) and c2[k:].sum() == 0
    assert bpb2 == pytest.approx(r2["final"]["val_bpb"], rel=1e-10)
    ch1, ch2 = r1["final"]["chunks"], r2["final"]["chunks"]  # summed over ranks: the same chunks either way
    assert (ch2["targets"], ch2["bytes"]) == (ch1["targets"], ch1["bytes"]) and sum(ch1["targets"]) == k
    assert ch2["nll"] == pytest.approx(ch1["nll"], rel=1e-5)
    with np.load(two / "s.npz") as z:  # sum p is reduced over ranks like nll: 1 per target scored, NaN elsewhere
        psum = z["prob_sum"]
    assert np.abs(psum[:k] - 1.0).max() <= PROB_SUM_TOLERANCE and np.isnan(psum[k:]).all()


def test_non_phased_ttt_label_and_progress_lines(tg, tmp_path):
    from tests.trainer.ttt_support import run_ttt
    entry, lines, dump = run_ttt(tg, hparams(tg, PHASED_TTT_ENABLED=0, TTT_OPTIMIZER="sgd", TTT_GRAD_STEPS=2),
                                 doc_stream(), tmp_path)
    assert entry["label"] == "quantized_ttt_lora" and "global_sgd_docs" not in entry["ttt"]
    assert any(re.fullmatch(r"ttt_progress: batch \d+/\d+ batch_loss:\d+\.\d{4} batch_bpb:\d+\.\d{4} "
                            r"running_loss:\d+\.\d{4} running_bpb:\d+\.\d{4} doc_len:\d+-\d+", l) for l in lines)
    assert not any(l.startswith(("ttp:", "ttpp:", "tttg:")) for l in lines)
    assert np.all(dump["count"] == 1)
