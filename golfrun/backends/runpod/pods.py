"""A campaign's pod: settings, create body, local record, bring-up, SSH, cost, the in-pod deadline.

Everything about one pod lives in `runs/<campaign>/pod.json` (written before anything waits, so a
crashed laptop can always find and end the pod) and `runs/<campaign>/.pod/` (the per-run SSH key,
mode 0600, and the campaign-local known_hosts). `.pod/` never leaves the laptop: it is excluded
from every push and from the preserve tarball.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.backends.runpod.api import Pod, RunpodClient
from golfrun.campaign.schema import RunpodBackend
from golfrun.errors import BackendError, CampaignError
from golfrun.fileio import epoch_of, now_iso, write_text_atomic

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

POD_JSON = "pod.json"
POD_DIR = ".pod"  # laptop-only: SSH private key and known_hosts
KEY_FILE = "pod_ssh_key"  # the name contains "key" so secret scans flag it
KNOWN_HOSTS = "known_hosts"
RECORD_SCHEMA = "golfrun.runpod-pod/1"
NAME_PREFIX = "golfrun-"
DEFAULT_IMAGE = RunpodBackend().image  # the schema's default
# Where an official image keeps the pod's own environment (runpod-api.md §4); `{pod_id}` is filled in.
POD_ENV_FILE_ENV = "GOLFRUN_RUNPOD_ENV_FILE"
DEFAULT_POD_ENV_FILE = "/etc/rp_environment"

Log = Callable[[str], None]


class PodError(BackendError):
    """A pod could not be brought up or kept: stuck, restarting, no GPUs, gone."""


class PriceCapError(BackendError):
    """A created pod costs more per hour than [backend.runpod] max_usd_per_hour allows."""


class PodLostError(PodError):
    """The pod went away (or restarted, wiping its disk) while the campaign ran on it."""


# ---------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunpodSettings(RunpodBackend):
    """The `[backend.runpod]` table (declared once, in golfrun/campaign/schema.py), plus the waits'
    limits, which are not campaign keys (tests shorten them)."""

    ready_timeout_s: float = 1200.0  # PROVISIONING → RUNNING with ssh.direct (large images pull slowly)
    settle_s: float = 20.0  # RUNNING this long without a restart before it counts as up
    poll_s: float = 5.0
    ssh_timeout_s: float = 180.0  # RUNNING → first SSH login

    @classmethod
    def from_campaign(cls, campaign: "Campaign") -> RunpodSettings:
        table = campaign.backend.runpod
        settings = cls(**{f.name: getattr(table, f.name) for f in fields(RunpodBackend)})
        settings.validate()
        return settings

    def validate(self) -> None:
        where = "[backend.runpod]"
        if self.interruptible:
            raise CampaignError(f"{where} interruptible = true: RunPod's v2 API has no spot pods; set it to false")
        if self.cloud_type not in ("SECURE", "COMMUNITY"):
            raise CampaignError(f"{where} cloud_type = {self.cloud_type!r}: expected SECURE or COMMUNITY")
        if self.gpu_count < 0:
            raise CampaignError(f"{where} gpu_count = {self.gpu_count}: must be >= 0")
        if self.volume_gb and self.network_volume_id:
            raise CampaignError(f"{where}: volume_gb and network_volume_id exclude each other; set one")
        if self.volume_gb and self.volume_gb < 10:
            raise CampaignError(f"{where} volume_gb = {self.volume_gb}: RunPod needs at least 10 (or 0 for none)")
        if not self.workdir.startswith("/"):
            raise CampaignError(f"{where} workdir = {self.workdir!r}: must be an absolute path on the pod")
        if self.deadline_minutes <= 0:
            raise CampaignError(f"{where} deadline_minutes = {self.deadline_minutes}: must be > 0 (the pod ends itself then)")
        if self.max_rerolls < 0 or self.max_usd_per_hour < 0:
            raise CampaignError(f"{where} max_rerolls and max_usd_per_hour must be >= 0")
        if self.budget_usd < 0:
            raise CampaignError(f"{where} budget_usd = {self.budget_usd}: must be >= 0 (0 = none)")
        for port in self.ports:
            number, _, kind = port.partition("/")
            if not number.isdigit() or kind not in ("tcp", "http"):
                raise CampaignError(f"{where} ports: {port!r} is not '<n>/tcp' or '<n>/http'")
        for key in self.env:
            if key == "PUBLIC_KEY":
                raise CampaignError(f"{where} env.PUBLIC_KEY: golfrun sets it (the per-run SSH key); remove it")


def pod_name(campaign: str, short_id: str | None = None) -> str:
    """`golfrun-<campaign>-<short id>`: the only handle on ownership, since v2 pods have no tags."""
    return f"{NAME_PREFIX}{campaign}-{short_id or secrets.token_hex(3)}"


def campaign_of(name: str) -> str | None:
    """The campaign part of a golfrun pod name, or None for somebody else's pod."""
    if not name.startswith(NAME_PREFIX) or name.count("-") < 2:
        return None
    return name[len(NAME_PREFIX):].rsplit("-", 1)[0]


def create_body(settings: RunpodSettings, name: str, public_key: str) -> dict[str, Any]:
    """The `POST /v2/pods` body (runpod-api.md §2.1). Pure; golden-tested."""
    ports = list(dict.fromkeys([*settings.ports, "22/tcp"]))  # ssh.direct needs 22/tcp
    env = {**dict(settings.env), "PUBLIC_KEY": public_key}
    body: dict[str, Any] = {"name": name, "image": settings.image, "cloud": settings.cloud_type,
                            "disk": int(settings.container_disk_gb), "ports": ports, "env": env}
    if settings.gpu_count > 0:
        body["gpu"] = {"id": settings.gpu_type, "count": int(settings.gpu_count)}
    else:
        body["cpu"] = {"id": "cpu3c", "vcpuCount": 2}
    if settings.data_center_ids:
        body["dataCenterIds"] = list(settings.data_center_ids)
    if settings.network_volume_id:
        body["mounts"] = {"network": [{"volumeId": settings.network_volume_id, "path": settings.volume_mount_path}]}
    elif settings.volume_gb:
        body["mounts"] = {"persistent": {"size": int(settings.volume_gb), "path": settings.volume_mount_path}}
    return body


# ---------------------------------------------------------------------------------------- record


@dataclass
class PodRecord:
    """`runs/<campaign>/pod.json`. Holds no secret: the API key never, the SSH key only by path."""

    campaign: str
    name: str
    pod_id: str = ""
    status: str = "CREATING"
    api_url: str = ""
    created_at: str = ""
    started_at: str = ""
    ended_at: str = ""
    end_reason: str = ""
    cost_per_hr: float = 0.0
    running_since_epoch: float = 0.0  # laptop clock, when golfrun first saw it RUNNING
    gpu_type: str = ""
    gpu_count: int = 0
    data_center_id: str = ""
    ssh_host: str = ""
    ssh_port: int = 0
    ssh_user: str = ""
    host_key: str = ""  # "<type> <base64>", recorded on first contact
    workdir: str = ""
    deadline_epoch: float = 0.0  # the in-pod timer ends the pod at this time
    budget_usd: float = 0.0
    run_started_at: str = ""
    exit_code: int | None = None
    earlier_pods: list[dict[str, Any]] = field(default_factory=list)  # pods this campaign used before
    schema: str = RECORD_SCHEMA

    @property
    def live(self) -> bool:
        return bool(self.pod_id) and not self.ended_at

    def cost_so_far(self, now: float | None = None) -> float:
        """USD of this pod (rate × RUNNING time seen) plus what earlier pods of the campaign cost."""
        earlier = sum(float(p.get("cost_usd") or 0.0) for p in self.earlier_pods)
        return earlier + self.pod_cost(now)

    def pod_cost(self, now: float | None = None) -> float:
        return self.up_seconds(now) * self.cost_per_hr / 3600.0

    def up_seconds(self, now: float | None = None) -> float:
        """Seconds this pod has been RUNNING (from golfrun first seeing it so to its end, or now)."""
        if not self.running_since_epoch:
            return 0.0
        end = now if now is not None else time.time()
        if self.ended_at:
            end = min(end, epoch_of(self.ended_at) or end)
        return max(0.0, end - self.running_since_epoch)

    def up_gpu_seconds(self, now: float | None = None) -> float:
        """GPU-seconds the campaign's pods held, this one and the earlier ones, busy or idle: what the
        account pays for in GPU time. An earlier pod recorded before `up_s` was kept counts its cost
        at its rate, with this pod's GPU count when it named none."""
        total = self.up_seconds(now) * self.gpu_count
        for p in self.earlier_pods:
            rate = float(p.get("cost_per_hr") or 0.0)
            up = p.get("up_s")
            seconds = float(up) if isinstance(up, (int, float)) else (float(p.get("cost_usd") or 0.0) / rate * 3600.0 if rate > 0 else 0.0)
            total += seconds * int(p.get("gpu_count") or self.gpu_count)
        return total


def record_path(campaign_dir: Path) -> Path:
    return Path(campaign_dir) / POD_JSON


def pod_folder(campaign_dir: Path) -> Path:
    folder = Path(campaign_dir) / POD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def load_record(campaign_dir: Path) -> PodRecord | None:
    path = record_path(campaign_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: unreadable pod record ({exc}); the pod id may also be found with `golfrun pod sweep`") from None
    if data.get("schema") != RECORD_SCHEMA:
        raise BackendError(f"{path}: schema {data.get('schema')!r}, expected {RECORD_SCHEMA!r}")
    known = PodRecord.__dataclass_fields__
    return PodRecord(**{k: v for k, v in data.items() if k in known})


def save_record(campaign_dir: Path, record: PodRecord) -> None:
    """Atomic (temp + fsync + rename): the pod id must survive a crash right after create."""
    write_text_atomic(record_path(campaign_dir), json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------- keys


def new_key_pair(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key for this pod: private key file (0600) and the OpenSSH public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path = Path(folder) / KEY_FILE
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    comment = f"golfrun-{secrets.token_hex(2)}"
    public_line = public.decode() + " " + comment
    (Path(folder) / (KEY_FILE + ".pub")).write_text(public_line + "\n")
    return path, public_line


# ---------------------------------------------------------------------------------------- lifecycle


def create(client: RunpodClient, settings: RunpodSettings, campaign_dir: Path, record: PodRecord, log: Log) -> PodRecord:
    """Create the pod and write its id to pod.json before returning (and so before any wait)."""
    folder = pod_folder(campaign_dir)
    _, public_line = new_key_pair(folder)
    known = folder / KNOWN_HOSTS
    known.write_text("")  # a new pod has a new host key: nothing of the last one is trusted
    record.status, record.created_at = "CREATING", now_iso()
    save_record(campaign_dir, record)  # the name is on disk even if the laptop dies inside the POST
    body = create_body(settings, record.name, public_line)
    log(f"creating pod {record.name}: {settings.gpu_count}x {settings.gpu_type}, {settings.cloud_type}"
        + (f", in {', '.join(settings.data_center_ids)}" if settings.data_center_ids else ""))
    pod = client.create_pod(body)
    record.pod_id, record.status = pod.id, pod.status
    record.cost_per_hr, record.gpu_type, record.gpu_count = pod.cost_per_hr, pod.gpu_id, pod.gpu_count
    save_record(campaign_dir, record)
    log(f"pod {pod.id} created ({pod.status}); its id is in {record_path(campaign_dir)}")
    if settings.max_usd_per_hour and pod.cost_per_hr > settings.max_usd_per_hour:
        why = (f"its rate {pod.cost_per_hr:.2f} USD/h is above [backend.runpod] max_usd_per_hour = "
               f"{settings.max_usd_per_hour:.2f}")
        terminate(client, campaign_dir, record, f"price cap: {why}", log)
        raise PriceCapError(f"pod {pod.id} ({settings.gpu_count}x {settings.gpu_type}) was terminated before anything "
                            f"ran on it: {why}")
    return record


def wait_running(client: RunpodClient, settings: RunpodSettings, campaign_dir: Path, record: PodRecord, log: Log,
                 sleep: Callable[[float], None] = time.sleep) -> Pod:
    """Wait for RUNNING with ssh.direct, stable for `settle_s`, within `ready_timeout_s`.

    Raises PodError when the pod is stuck, ends in ERROR, disappears, restarts in a loop (the
    container's command keeps failing, runtime.uptime resets) or runs with zero GPUs.
    """
    start = time.monotonic()
    end = start + settings.ready_timeout_s
    last_status, last_uptime, restarts = "", -1.0, 0
    stable_since: float | None = None
    while True:
        pod = client.get_pod(record.pod_id)
        now = time.monotonic()
        if pod is None:
            raise PodError(f"pod {record.pod_id} disappeared while starting (terminated outside golfrun?)")
        if pod.status != last_status:
            log(f"pod {pod.id}: {pod.status}")
            if last_status == "RUNNING":
                restarts += 1
        restarted_in_place = pod.status == "RUNNING" and pod.uptime_s is not None and 0 <= pod.uptime_s < last_uptime
        if restarted_in_place:
            restarts += 1
        last_status = pod.status
        last_uptime = pod.uptime_s if pod.uptime_s is not None else -1.0
        if restarts >= 2:
            raise PodError(f"pod {pod.id} restarts in a loop ({restarts} restarts while starting): the container's "
                           f"start command keeps failing; check the image {settings.image!r}")
        if pod.status == "ERROR":
            raise PodError(f"pod {pod.id} went to ERROR while starting (image {settings.image!r} may not pull or start)")
        if pod.status in ("EXITED", "TERMINATED"):
            raise PodError(f"pod {pod.id} stopped ({pod.status}) while starting")
        if pod.status == "RUNNING" and not restarted_in_place:
            if settings.gpu_count > 0 and pod.runtime_gpus == 0:
                raise PodError(f"pod {pod.id} is RUNNING with zero GPUs (its host's GPUs were rented to someone "
                               "else); golfrun does not run a campaign on it")
            if pod.ssh_direct is not None:
                stable_since = stable_since if stable_since is not None else now
                if now - stable_since >= settings.settle_s:
                    _note_running(record, pod)
                    save_record(campaign_dir, record)
                    return pod
        else:
            stable_since = None
        if now > end:
            extra = " (RUNNING but no ssh.direct: is 22/tcp in ports?)" if pod.status == "RUNNING" else ""
            raise PodError(f"pod {pod.id} still {pod.status} after {settings.ready_timeout_s:.0f}s{extra}; "
                           "raise [backend.runpod] ready_timeout_s or try another data center")
        sleep(settings.poll_s if stable_since is None else min(settings.poll_s, max(0.05, settings.settle_s / 4)))


def _note_running(record: PodRecord, pod: Pod) -> None:
    record.status = pod.status
    record.cost_per_hr = pod.cost_per_hr
    record.started_at = pod.started_at or record.started_at or now_iso()
    record.running_since_epoch = record.running_since_epoch or time.time()
    record.data_center_id = pod.data_center_id
    assert pod.ssh_direct is not None
    record.ssh_host, record.ssh_port, record.ssh_user = pod.ssh_direct.host, pod.ssh_direct.port, pod.ssh_direct.user


def connect(campaign_dir: Path, record: PodRecord, timeout_s: float = 60.0) -> Any:
    """An SshTransport to the pod. The first contact records the host key (trust on first use, in the
    campaign's own known_hosts, for this pod only); every later contact checks it."""
    from golfrun.transport.ssh import SshTarget, SshTransport

    folder = pod_folder(campaign_dir)
    known = folder / KNOWN_HOSTS
    first = not record.host_key
    if first:
        known.write_text("")
    else:
        known.write_text(f"{_known_host(record.ssh_host, record.ssh_port)} {record.host_key}\n")
        os.chmod(known, 0o600)
    transport = SshTransport(SshTarget(record.ssh_host, record.ssh_user or "root", record.ssh_port),
                             key_path=folder / KEY_FILE, known_hosts=known, accept_new_host_key=first,
                             connect_deadline_s=timeout_s)
    transport.run(["true"], timeout_s=timeout_s).check()  # banner/connection errors are retried inside
    if first:
        lines = [line.split() for line in known.read_text().splitlines() if line.strip()]
        if not lines:
            raise PodError(f"ssh {record.ssh_host}:{record.ssh_port}: no host key was recorded in {known}")
        record.host_key = " ".join(lines[0][1:3])
        save_record(campaign_dir, record)
    return transport


def _known_host(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def terminate(client: RunpodClient, campaign_dir: Path, record: PodRecord, reason: str, log: Log) -> None:
    """End the pod (404 = already gone) and note it in pod.json. Safe to call twice."""
    if record.pod_id and not record.ended_at:
        gone = client.terminate(record.pod_id)
        log(f"pod {record.pod_id} terminated ({reason})" if gone else f"pod {record.pod_id} was already gone ({reason})")
    record.ended_at = record.ended_at or now_iso()
    record.end_reason = record.end_reason or reason
    record.status = "TERMINATED"
    save_record(campaign_dir, record)


def retire(record: PodRecord) -> PodRecord:
    """A fresh record for the campaign's next pod that remembers the ended one (for cost and history)."""
    earlier = [*record.earlier_pods]
    if record.pod_id:
        earlier.append({"pod_id": record.pod_id, "name": record.name, "created_at": record.created_at,
                        "ended_at": record.ended_at, "end_reason": record.end_reason,
                        "cost_per_hr": record.cost_per_hr, "cost_usd": round(record.pod_cost(), 6),
                        "gpu_count": record.gpu_count, "up_s": round(record.up_seconds(), 3)})
    return PodRecord(campaign=record.campaign, name=pod_name(record.campaign), api_url=record.api_url,
                     budget_usd=record.budget_usd, workdir=record.workdir, earlier_pods=earlier)


def refresh(client: RunpodClient, campaign_dir: Path, record: PodRecord) -> Pod | None:
    """Re-read the pod; update status, rate and endpoint in pod.json. None when the pod is gone."""
    pod = client.get_pod(record.pod_id) if record.pod_id else None
    if pod is None:
        if record.live:
            record.status, record.ended_at = "GONE", now_iso()
            record.end_reason = record.end_reason or "gone (terminated outside golfrun, or by its deadline)"
            save_record(campaign_dir, record)
        return None
    record.status, record.cost_per_hr = pod.status, pod.cost_per_hr or record.cost_per_hr
    if pod.ssh_direct is not None:
        record.ssh_host, record.ssh_port, record.ssh_user = pod.ssh_direct.host, pod.ssh_direct.port, pod.ssh_direct.user
    save_record(campaign_dir, record)
    return pod


def deadline_epoch(settings: RunpodSettings, record: PodRecord, now: float | None = None) -> float:
    """When the in-pod timer ends the pod: the campaign's deadline, or earlier when the budget runs out."""
    now = time.time() if now is None else now
    at = now + settings.deadline_minutes * 60.0
    if settings.budget_usd and record.cost_per_hr > 0:
        left = settings.budget_usd - record.cost_so_far(now)
        at = min(at, now + max(0.0, left) / record.cost_per_hr * 3600.0)
    return at


def pod_env_file(pod_id: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(POD_ENV_FILE_ENV, DEFAULT_POD_ENV_FILE).replace("{pod_id}", pod_id)


def golfrun_pods(client: RunpodClient) -> list[Pod]:
    return [p for p in client.list_pods() if p.name.startswith(NAME_PREFIX)]


def owned_pod_ids(runs_dirs: Sequence[Path]) -> dict[str, Path]:
    """Pod ids that a campaign under these runs folders still owns (a live record in its pod.json)."""
    owned: dict[str, Path] = {}
    for runs in runs_dirs:
        if not Path(runs).is_dir():
            continue
        for path in sorted(Path(runs).glob(f"*/{POD_JSON}")):
            try:
                record = load_record(path.parent)
            except BackendError:
                continue
            if record is not None and record.live:
                owned[record.pod_id] = path.parent
    return owned


def sweep(client: RunpodClient, runs_dirs: Sequence[Path], yes: bool, log: Log) -> list[Pod]:
    """`golfrun-` pods that no live campaign under `runs_dirs` owns; terminated when `yes`."""
    owned = owned_pod_ids(runs_dirs)
    ours = golfrun_pods(client)
    orphans = [p for p in ours if p.id not in owned]
    for pod in ours:
        if pod.id in owned:
            log(f"keep  {pod.id}  {pod.name}  {pod.status}  (owned by {owned[pod.id]})")
    for pod in orphans:
        log(f"{'end ' if yes else 'orphan'}  {pod.id}  {pod.name}  {pod.status}  {pod.cost_per_hr:.2f} USD/h  "
            f"(campaign {campaign_of(pod.name) or '?'}, no live pod.json owns it)")
        if yes:
            client.terminate(pod.id)
    if orphans and not yes:
        log(f"{len(orphans)} orphan pod(s); run again with --yes to terminate them")
    return orphans
