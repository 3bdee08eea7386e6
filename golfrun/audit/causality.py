"""No validation token used before it is scored, shown on a real run: the pure parts of
`golfrun audit --causality` (docs/records.md "Causality"; the reruns are golfrun/audit/rerun.py).

The test is the one tests/trainer/test_legality.py runs on a tiny model: cut the validation stream
at a point of the scoring order, replace every token scored at or after the cut by another token,
rerun the evaluation, and every score before the cut must stay as it was while the scores after it
move. On a real run a second, unchanged rerun (the control) measures how far two evaluations of the
same tokens differ (0 on the CPU; nondeterministic GPU kernels differ slightly), and the scores
before the cut may move by at most `factor` times that.

- `choose_cut`: where to cut, from the dump's `step` (the TTT scoring event of each target): inside a
  chunk of a middle event whose document is scored again later (so the chunk is also trained on
  after it was scored); for a dump without TTT steps, in the middle of an evaluation window;
- `later_targets`: the targets scored at or after the cut;
- `perturb_stream`: those targets' tokens replaced by other non-BOS tokens (documents keep their BOS,
  so the schedule of the evaluation is unchanged);
- `judge`: the original, control and perturbed scores → a `Finding`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfrun.audit.rules import Finding
from golfrun.data.layout import BOS_ID

FIRST_ORDINARY_TOKEN = BOS_ID + 1  # ids below this (<unk>/<pad> and BOS) are never written
MAX_EVENTS_TRIED = 64  # events searched for a chunk trained on later (each search reads the whole dump)


@dataclass(frozen=True)
class Cut:
    position: int  # entry p of the dump (entry e scores token e+1)
    event: int | None = None  # the TTT scoring event t0 (dump `step`); None: a position cut

    def describe(self) -> str:
        if self.event is None:
            return f"at target {self.position:,}"
        return f"inside scoring event {self.event} at target {self.position:,}"


@dataclass(frozen=True)
class Tolerance:
    factor: float = 4.0  # the scores before the cut may move this many times the control's deviation
    epsilon: float = 1e-9  # nats: the limit when the control reproduces the run exactly
    noise_cap: float = 0.05  # nats: a control further off than this is not a rerun of the scored evaluation


@dataclass(frozen=True)
class Scores:
    """One evaluation's dump: nll (NaN where never scored) and step (-1 outside TTT)."""

    nll: np.ndarray
    step: np.ndarray


def documents(tokens: np.ndarray, n: int) -> np.ndarray:
    """The document of each dump entry 0..n-1 (a document starts at its BOS; entry e is in the
    document holding token e, as the trainer's find_documents assigns it)."""
    starts = np.flatnonzero(tokens[:n] == BOS_ID)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    return np.searchsorted(starts, np.arange(n), side="right") - 1


def choose_cut(step: np.ndarray, scored: np.ndarray, tokens: np.ndarray, seq_len: int) -> Cut:
    """Where to cut (see the module's doc). Raises ValueError when fewer than two targets are scored."""
    idx = np.flatnonzero(scored)
    if idx.size < 2:
        raise ValueError(f"{idx.size} target(s) scored: nothing to cut")
    events = np.unique(step[scored & (step >= 0)])
    if events.size == 0:
        mid = int(idx[idx.size // 2])
        p = (mid // seq_len) * seq_len + seq_len // 2  # mid-window: the causal mask is what is tested
        return Cut(int(min(max(p, idx[1]), idx[-1])))
    doc = documents(tokens, step.size)
    last_event = np.full(int(doc.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(last_event, doc[scored], step[scored])
    fallback: Cut | None = None
    for t0 in np.roll(events, -(events.size // 2))[:MAX_EVENTS_TRIED]:  # from the middle event on
        at = np.flatnonzero(scored & (step == t0))
        for trained_later in (True, False):
            pick = at[last_event[doc[at]] > t0] if trained_later else at
            if pick.size == 0:
                continue
            chunk = at[doc[at] == doc[pick[0]]]
            if chunk.size >= 2:
                cut = Cut(int(chunk[chunk.size // 2]), int(t0))
                if trained_later:
                    return cut
                fallback = fallback or cut
    return fallback or Cut(int(idx[idx.size // 2]), int(step[idx[idx.size // 2]]))


def later_targets(step: np.ndarray, scored: np.ndarray, cut: Cut) -> np.ndarray:
    """The scored targets at or after the cut: (step, position) >= (t0, p), or position >= p."""
    e = np.arange(step.size)
    if cut.event is None:
        return scored & (e >= cut.position)
    return scored & ((step > cut.event) | ((step == cut.event) & (e >= cut.position)))


def perturb_stream(tokens: np.ndarray, later: np.ndarray, vocab_size: int, seed: int = 1) -> np.ndarray:
    """A copy of the stream with every non-BOS token that a target in `later` scores (token e+1 of
    entry e) replaced by another ordinary token; BOS tokens, and so the documents, stay."""
    if vocab_size - FIRST_ORDINARY_TOKEN < 2:
        raise ValueError(f"vocabulary of {vocab_size}: no other token to write")
    out = np.array(tokens, dtype=np.int64, copy=True)
    k = np.flatnonzero(later) + 1
    k = k[out[k] != BOS_ID]
    span = vocab_size - FIRST_ORDINARY_TOKEN
    shift = np.random.default_rng(seed).integers(1, span, k.size)
    out[k] = (out[k] - FIRST_ORDINARY_TOKEN + shift) % span + FIRST_ORDINARY_TOKEN
    return out


def judge(original: Scores, control: Scores, perturbed: Scores, cut: Cut, tol: Tolerance = Tolerance(),
          seed: int | None = None) -> Finding:
    """observed: the largest |Δnll| of a target scored before the cut (perturbed against the run's
    dump); limit: max(factor × the control's largest |Δnll| there, epsilon). ok None when the
    reruns do not reproduce the run (other targets, another order, a control off by more than the
    noise cap) or the perturbation moved no score after the cut: then nothing is shown."""
    scored = ~np.isnan(original.nll)
    later = later_targets(original.step, scored, cut)
    before, after = scored & ~later, later
    where = f"cut {cut.describe()}: {int(before.sum()):,} targets before, {int(after.sum()):,} after"
    for name, run in (("control", control), ("perturbed", perturbed)):
        if run.nll.shape != original.nll.shape or not np.array_equal(~np.isnan(run.nll), scored):
            return _unshown(f"{where}; the {name} rerun scored other targets than the run", tol, seed)
        if not np.array_equal(run.step, original.step):
            return _unshown(f"{where}; the {name} rerun scored in another order than the run", tol, seed)
    noise = _largest(np.abs(control.nll - original.nll)[before])
    if noise > tol.noise_cap:
        return _unshown(f"{where}; the control rerun is {noise:.3g} nats off the run's own scores (cap "
                        f"{tol.noise_cap:g}): it is not the scored evaluation", tol, seed)
    limit = max(tol.factor * noise, tol.epsilon)
    moved = np.abs(perturbed.nll - original.nll)
    observed = _largest(moved[before])
    leaked = np.flatnonzero(before & (moved > limit))
    changed = int((moved[after] > limit).sum())
    detail = (f"{where}; control max |Δnll| {noise:.3g} (limit {tol.factor:g}× that, at least {tol.epsilon:g}); "
              f"{leaked.size:,} target(s) before the cut moved past it"
              f"{f' (first: target {int(leaked[0]):,})' if leaked.size else ''}; "
              f"{changed:,} of {int(after.sum()):,} after the cut changed")
    if leaked.size:
        return Finding("causality", False, observed, limit, "nats", detail, seed)
    if changed == 0:
        return Finding("causality", None, observed, limit, "nats",
                       detail + ": the perturbation moved nothing, so it shows nothing", seed)
    return Finding("causality", True, observed, limit, "nats", detail, seed)


def _largest(x: np.ndarray) -> float:
    return float(x.max()) if x.size else 0.0


def _unshown(detail: str, tol: Tolerance, seed: int | None) -> Finding:
    return Finding("causality", None, None, tol.epsilon, "nats", detail, seed)
