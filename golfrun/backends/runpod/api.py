"""A small client for RunPod's REST v2 pod API (docs/runpod.md; reference: runpod-api.md §1-2).

Stdlib `urllib` only: six JSON calls do not earn an HTTP library. The API key comes from
`RUNPOD_API_KEY` and travels only in the `Authorization: Bearer` header; it is scrubbed from every
message this module produces. The base URL comes from `RUNPOD_API_URL` (default the public v2 URL).

Retries: 429 sleeps `Retry-After`; 5xx and network errors back off until a deadline. Pod creation
is never retried blindly: create is not idempotent, so after an uncertain failure (5xx, timeout,
dropped connection) the client lists pods and looks for the name before posting again.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from golfrun.errors import BackendError
from golfrun.secrets import redact_text

DEFAULT_API_URL = "https://api.runpod.io/v2"
API_KEY_ENV = "RUNPOD_API_KEY"
API_URL_ENV = "RUNPOD_API_URL"

# Capacity has no machine code, only prose in `detail` (runpod-api.md §1).
_CAPACITY_WORDS = re.compile(r"no longer any instances|instances available|no capacity|not available|unavailable", re.I)


class RunpodApiError(BackendError):
    """The API refused a call (or could not be reached). `status` is the HTTP code, 0 for network."""

    def __init__(self, message: str, status: int = 0, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class CapacityError(RunpodApiError):
    """No machine with the requested GPU is free in the requested data centers."""


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str


@dataclass(frozen=True)
class Pod:
    """The fields of a v2 Pod object golfrun acts on (runpod-api.md §2.2)."""

    id: str
    name: str
    status: str  # PROVISIONING | STARTING | RUNNING | EXITED | ERROR | TERMINATED (others kept as-is)
    actions: tuple[str, ...] = ()
    cost_per_hr: float = 0.0
    gpu_id: str = ""
    gpu_count: int = 0
    runtime_gpus: int | None = None  # GPUs the running container sees; None when there is no runtime
    uptime_s: float | None = None
    data_center_id: str = ""
    ssh_direct: SshEndpoint | None = None
    created_at: str = ""
    started_at: str = ""
    image: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pod:
        gpu = data.get("gpu") or {}
        runtime = data.get("runtime") or None  # the spec's examples send {} for "no runtime"
        direct = (data.get("ssh") or {}).get("direct")
        endpoint = None
        if direct and direct.get("host") and direct.get("port"):
            endpoint = SshEndpoint(str(direct["host"]), int(direct["port"]), str(direct.get("username") or "root"))
        elif runtime:
            # ssh.direct may lag behind the port table: use the public mapping of 22/tcp.
            for port in runtime.get("ports") or []:
                if port.get("private") == 22 and port.get("type") == "tcp" and port.get("public") and port.get("ip"):
                    endpoint = SshEndpoint(str(port["ip"]), int(port["public"]), "root")
                    break
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            status=str(data.get("status") or "UNKNOWN"),
            actions=tuple(data.get("actions") or ()),
            cost_per_hr=float(data.get("cost") or 0.0),
            gpu_id=str(gpu.get("id") or ""),
            gpu_count=int(gpu.get("count") or 0),
            runtime_gpus=len(runtime.get("gpus") or []) if runtime else None,
            uptime_s=float(runtime["uptime"]) if runtime and runtime.get("uptime") is not None else None,
            data_center_id=str(data.get("dataCenterId") or ""),
            ssh_direct=endpoint,
            created_at=str(data.get("createdAt") or ""),
            started_at=str(data.get("startedAt") or ""),
            image=str(data.get("image") or ""),
        )


@dataclass(frozen=True)
class NetworkVolume:
    """A network volume (`/v2/network-volumes`): persistent storage in one data centre."""

    id: str
    name: str
    size_gb: int
    data_center: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetworkVolume:
        return cls(id=str(data["id"]), name=str(data.get("name") or ""), size_gb=int(data.get("size") or 0),
                   data_center=str(data.get("dataCenter") or data.get("dataCenterId") or ""))


@dataclass
class RetryPolicy:
    deadline_s: float = 300.0  # total time one call may spend retrying
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    request_timeout_s: float = 30.0


@dataclass
class RunpodClient:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_API_URL
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda _msg: None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> RunpodClient:
        env = os.environ if env is None else env
        key = env.get(API_KEY_ENV, "").strip()
        if not key:
            raise BackendError(f"{API_KEY_ENV} is not set: create an API key in the RunPod console and export it")
        url = env.get(API_URL_ENV, "").strip() or DEFAULT_API_URL
        return cls(api_key=key, base_url=url.rstrip("/"), **kwargs)

    # ------------------------------------------------------------------ verbs

    def create_pod(self, body: Mapping[str, Any]) -> Pod:
        """POST /pods. Retries only where it cannot make a duplicate; see the module docstring."""
        name = str(body.get("name") or "")
        end = time.monotonic() + self.retry.deadline_s
        backoff = self.retry.first_backoff_s
        while True:
            try:
                _, data = self._exchange("POST", "/pods", body)
                return Pod.from_json(data)
            except RunpodApiError as err:
                if err.status == 400 and _CAPACITY_WORDS.search(err.detail or str(err)):
                    gpu = body.get("gpu") or {}
                    dcs = ", ".join(body.get("dataCenterIds") or []) or "any data center"
                    raise CapacityError(
                        f"no capacity for {gpu.get('count', 1)}x {gpu.get('id', '?')} in {dcs} "
                        f"({body.get('cloud', 'SECURE')} cloud): {err.detail or err}",
                        err.status,
                        err.detail,
                    ) from None
                if err.status == 429:  # refused before any processing: safe to post again
                    wait = err.retry_after if err.retry_after is not None else backoff
                    if time.monotonic() + wait > end:
                        raise
                    self.log(f"create of {name}: rate limited; retrying in {wait:.0f}s")
                    self.sleep(wait)
                    continue
                if not _uncertain(err.status):
                    raise
                # The request may have created the pod before failing: look before posting again.
                self.log(f"create of {name} uncertain ({err}); listing pods before any retry")
                existing = self._find_by_name_with_retry(name, end)
                if existing is not None:
                    return existing
                if time.monotonic() + backoff > end:
                    raise RunpodApiError(f"could not create pod {name}: {err} (gave up after {self.retry.deadline_s:.0f}s)", err.status, err.detail) from None
                self.sleep(backoff)
                backoff = min(backoff * 2, self.retry.max_backoff_s)

    def get_pod(self, pod_id: str) -> Pod | None:
        """The pod, or None when it is gone (404, or status TERMINATED)."""
        try:
            data = self._call("GET", f"/pods/{pod_id}")
        except RunpodApiError as err:
            if err.status == 404:
                return None
            raise
        pod = Pod.from_json(data)
        return None if pod.status == "TERMINATED" else pod

    def list_pods(self) -> list[Pod]:
        data = self._call("GET", "/pods")
        items = data.get("pods") if isinstance(data, dict) else data
        return [Pod.from_json(item) for item in items or []]

    def find_pods(self, name: str) -> list[Pod]:
        return [p for p in self.list_pods() if p.name == name and p.status != "TERMINATED"]

    def action(self, pod_id: str, action: str) -> Pod | None:
        if action not in ("start", "stop", "restart", "terminate"):
            raise ValueError(f"unknown pod action {action!r}")
        data = self._call("POST", f"/pods/{pod_id}/action", {"action": action})
        return Pod.from_json(data) if data else None

    def stop(self, pod_id: str) -> Pod | None:
        return self.action(pod_id, "stop")

    def start(self, pod_id: str) -> Pod | None:
        return self.action(pod_id, "start")

    def restart(self, pod_id: str) -> Pod | None:
        return self.action(pod_id, "restart")

    def terminate(self, pod_id: str) -> bool:
        """DELETE /pods/{id}. True when this call ended it, False when it was already gone (404)."""
        try:
            self._call("DELETE", f"/pods/{pod_id}")
        except RunpodApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def list_network_volumes(self) -> list[NetworkVolume]:
        data = self._call("GET", "/network-volumes")
        items = data.get("networkVolumes") if isinstance(data, dict) else data
        return [NetworkVolume.from_json(item) for item in items or []]

    def create_network_volume(self, name: str, size_gb: int, data_center: str) -> NetworkVolume:
        """POST /network-volumes, once: a volume is billed until deleted, so no blind retry."""
        _, data = self._exchange("POST", "/network-volumes", {"name": name, "size": int(size_gb), "dataCenter": data_center})
        return NetworkVolume.from_json(data)

    # ------------------------------------------------------------------ plumbing

    def _find_by_name_with_retry(self, name: str, end: float) -> Pod | None:
        saved = self.retry.deadline_s
        self.retry.deadline_s = max(1.0, end - time.monotonic())
        try:
            found = self.find_pods(name)
        finally:
            self.retry.deadline_s = saved
        return found[0] if found else None

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One idempotent call: retries 429 (after Retry-After) and 5xx/network (with back-off)."""
        end = time.monotonic() + self.retry.deadline_s
        backoff = self.retry.first_backoff_s
        while True:
            try:
                return self._exchange(method, path, body)[1]
            except RunpodApiError as err:
                if err.status != 429 and not _uncertain(err.status):
                    raise
                wait = err.retry_after if err.status == 429 and err.retry_after is not None else backoff
                if time.monotonic() + wait > end:
                    raise RunpodApiError(f"{err} (gave up after {self.retry.deadline_s:.0f}s)", err.status, err.detail) from None
                self.log(f"{method} {path}: {err}; retrying in {wait:.0f}s")
                self.sleep(wait)
                if err.status != 429:
                    backoff = min(backoff * 2, self.retry.max_backoff_s)

    def _exchange(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.retry.request_timeout_s) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw.strip() else None)
        except urllib.error.HTTPError as http:
            raw = http.read()
            err = self._http_error(method, path, http.code, raw)
            retry_after = http.headers.get("Retry-After") if http.headers else None
            if retry_after is not None:
                try:
                    err.retry_after = max(0.0, float(retry_after))
                except ValueError:
                    pass
            raise err from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as net:
            reason = getattr(net, "reason", net)
            raise RunpodApiError(self._scrub(f"RunPod API {method} {path}: cannot reach {self.base_url}: {reason}"), 0) from None

    def _http_error(self, method: str, path: str, status: int, raw: bytes) -> RunpodApiError:
        title, detail, errors = "", "", []
        try:
            problem = json.loads(raw) if raw else {}
            if isinstance(problem, dict):
                title = str(problem.get("title") or "")
                detail = str(problem.get("detail") or problem.get("message") or problem.get("error") or "")
                errors = [str(e) for e in problem.get("errors") or []]
        except ValueError:
            detail = raw[:300].decode("utf-8", "replace")
        hint = {401: " (check RUNPOD_API_KEY)", 402: " (insufficient balance)", 403: " (the API key lacks access)"}.get(status, "")
        text = f"RunPod API {method} {path}: {status} {title or 'error'}"
        if detail:
            text += f": {detail}"
        if errors:
            text += " [" + "; ".join(errors) + "]"
        return RunpodApiError(self._scrub(text + hint), status, self._scrub(detail))

    def _scrub(self, text: str) -> str:
        return redact_text(text, [self.api_key])


def _uncertain(status: int) -> bool:
    """Network failures and 5xx: the server may or may not have acted on the request."""
    return status == 0 or status >= 500
