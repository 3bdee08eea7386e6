"""Compliance audit of a finished run against the challenge's rules (docs/records.md "Audit").

- `rules`: the limits and one pure check per rule, each an observed value against its limit;
- `logfacts`: what a trainer log says about time, tokens and sizes (its own timestamps);
- `scoredump`: the per-target score dump (SCORE_DUMP_PATH) — every target scored once, bpb as reported,
  every scored distribution summing to 1;
- `report`: a run folder, records folder or campaign → the findings; gate-a and gate-b call
  `report.stage_checks` with one line each;
- `causality` (pure) and `rerun`: `golfrun audit JOB --causality` — no validation token used before it
  is scored, shown by rerunning the job's scored evaluation on a copy of its data changed after a cut.
"""
