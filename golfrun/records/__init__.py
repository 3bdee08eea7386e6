"""Published records folders (`records/track_10min_16mb/<date>_<name>/`) as golfrun's input.

- `folder`: read one — its per-seed logs (any published score format), submission.json, the README's
  run command (trainer environment, GPU count) and the data variant the logs name;
- `campaign`: the campaign file `golfrun init --from-record PATH` writes from it.
docs/records.md says what is inferred from where, and what is left for a person to fill in.
"""
