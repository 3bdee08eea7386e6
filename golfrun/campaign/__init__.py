"""golfrun.campaign: campaign TOML → typed, validated `Campaign`; presets; `--set`; fingerprints."""

from golfrun.campaign.fingerprint import file_sha256, fingerprint
from golfrun.campaign.load import Campaign, build_campaign, load_campaign, preset_names, preset_text
from golfrun.campaign.schema import Variant

__all__ = [
    "Campaign",
    "Variant",
    "build_campaign",
    "file_sha256",
    "fingerprint",
    "load_campaign",
    "preset_names",
    "preset_text",
]
