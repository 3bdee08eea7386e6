"""Typed errors. Library code raises these; only the CLI turns them into one-line messages and
exit codes. Every message names the file, key or value that is wrong."""

from __future__ import annotations


class GolfrunError(Exception):
    """Base of every error golfrun raises on purpose."""


class CampaignError(GolfrunError):
    """A campaign file, preset or --set override is invalid (names the key and the valid ones)."""


class UsageError(GolfrunError):
    """A command-line argument names something that does not exist or is malformed (exit 2, like a
    bad campaign): `--promote nosuch`, `--job-index 99`, `--to s3:foo`, `--date 2024-13-99`."""


class DataError(GolfrunError):
    """A dataset file is missing or malformed (names the file and what is wrong)."""


class SummaryError(GolfrunError):
    """A stage summary is missing, corrupted or of an unknown schema (names the file)."""


class LockError(GolfrunError):
    """Another golfrun process holds the campaign lock."""


class BackendError(GolfrunError):
    """A backend could not submit, poll, fetch or cancel a job."""


class TransportError(GolfrunError):
    """A command or file transfer to a machine failed (local shell or SSH)."""


class CausalityError(UsageError):
    """`golfrun audit --causality` cannot rerun this run's scored evaluation: names what is missing
    (a score dump, the quantized model, the data, a trainer that reads SCORE_DUMP_PATH) or why the
    target is not one run of golfrun's trainer. Refused before anything runs (exit 2)."""


class TrainerResultError(GolfrunError):
    """A trainer job produced no usable result (no results.json and no parsable log)."""


class ProvenanceError(GolfrunError):
    """Packaging, checksum verification or an upload failed."""


class BudgetError(GolfrunError):
    """Starting a stage would pass the campaign's [budget] (USD or GPU-hours); nothing was started."""
