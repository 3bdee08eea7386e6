"""Runs `run_campaign` (RunPod) in a process of its own, so a test can kill the "laptop" side.

Usage: python -m tests.runpod.drive_campaign CAMPAIGN_DIR WORKDIR EXTRA_JSON
"""

import json
import sys
from pathlib import Path

from golfrun.pipeline.remote import RemoteOptions
from golfrun.pipeline.runpod_campaign import run_campaign
from tests.runpod.campaigns import FAST, FAST_FOLLOW, load

campaign_dir, workdir, extra = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
code = run_campaign(load(workdir, extra), campaign_dir, RemoteOptions(), lambda m: print(m, flush=True),
                    timing=FAST, follow_timing=FAST_FOLLOW)
sys.exit(code)
