"""Where a trainer job runs. Every backend offers the same verbs (see base.py)."""
