"""golfrun: gated, resumable Parameter Golf campaigns.

Rooms (see docs/architecture.md): campaign → stages → gates/backends → transport, with the
pipeline engine on top and the CLI on top of that. `train_gpt.py` at the repo root stands alone.
"""

__version__ = "0.1.0"
