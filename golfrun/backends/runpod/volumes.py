"""The challenge data on a RunPod network volume: downloaded once, reused by every later pod.

With `[backend.runpod] data_volume_gb > 0`, before its first pod a campaign looks for the network
volume named `golfrun-data-<8 hex>` (the sha256 of data.source, data.revision and data.variant: one
volume per dataset, shared by every campaign that reads it) in its `data_center_ids`, and creates
it in the first of them when there is none. Each pod mounts it at `volume_mount_path` (a network
volume binds the pod to its data centre) and the campaign's `data.dir` points at
`<volume_mount_path>/golfrun-data` unless data.dir is set. download-data then keeps every file
already there whose sha256 (Hub sources) or layout (synthetic) checks out, so a pod after the first
downloads nothing; a new pod after a lost one need not rebuild the data either.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

from golfrun.backends.runpod.api import NetworkVolume, RunpodClient
from golfrun.errors import CampaignError
from golfrun.fileio import sha256_text

if TYPE_CHECKING:
    from golfrun.backends.runpod.pods import RunpodSettings
    from golfrun.campaign import Campaign

DATA_FOLDER = "golfrun-data"
NAME_PREFIX = "golfrun-data-"


def volume_name(campaign: "Campaign") -> str:
    d = campaign.data
    return NAME_PREFIX + sha256_text(f"{d.source}|{d.revision}|{d.variant}")[:8]


def pod_data_dir(settings: "RunpodSettings") -> str:
    return posixpath.join(settings.volume_mount_path, DATA_FOLDER)


def ensure_data_volume(client: RunpodClient, settings: "RunpodSettings", campaign: "Campaign",
                       log: Callable[[str], None]) -> NetworkVolume | None:
    """The campaign's data volume (found or created); None when data_volume_gb is 0."""
    if not settings.data_volume_gb:
        return None
    where = "[backend.runpod] data_volume_gb"
    if not settings.data_center_ids:
        raise CampaignError(f"{where} needs data_center_ids: a network volume lives in one data centre, and so do "
                            "the pods that mount it")
    if settings.volume_gb or settings.network_volume_id:
        raise CampaignError(f"{where} mounts the data volume: remove volume_gb and network_volume_id (a pod mounts one)")
    name = volume_name(campaign)
    found = [v for v in client.list_network_volumes() if v.name == name and v.data_center in settings.data_center_ids]
    if found:
        log(f"data volume {found[0].id} ({name}, {found[0].data_center}): reused")
        return found[0]
    volume = client.create_network_volume(name, settings.data_volume_gb, settings.data_center_ids[0])
    log(f"data volume {volume.id} ({name}, {settings.data_volume_gb} GB) created in {volume.data_center}")
    return volume


def with_volume(settings: "RunpodSettings", volume: NetworkVolume) -> "RunpodSettings":
    """The pod settings that mount the volume, in its data centre."""
    return dataclasses.replace(settings, network_volume_id=volume.id, data_center_ids=[volume.data_center])
