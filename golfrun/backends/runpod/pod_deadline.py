"""The in-pod deadline: ends this pod at a set time, even when nobody is watching from outside.

golfrun copies this file to the pod and starts it detached (setsid) right after the first SSH
login, before anything else runs there. Standard library only: it must work before golfrun or
its dependencies are installed. At the deadline it terminates the pod through RunPod's v2 API
with the pod's own, pod-scoped key (`RUNPOD_API_KEY`) and id (`RUNPOD_POD_ID`), which RunPod
puts into the container's environment; SSH sessions do not inherit that environment, so they
are also read from the image's env file (`/etc/rp_environment`) or from `/proc/1/environ`. The
laptop's key never comes here. The key is never printed.

Usage: python3 pod_deadline.py --at EPOCH_SECONDS --api-url URL [--env-file PATH] [--log PATH]
The file `<log>.at`, when present, overrides --at (golfrun writes it to move the deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

RETRY_S = 30.0


def pod_env(env_files: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in env_files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    line = line.strip()
                    if line.startswith("export "):
                        line = line[len("export "):]
                    key, sep, value = line.partition("=")
                    if sep and key.startswith("RUNPOD_"):
                        found.setdefault(key, value.strip().strip("'\""))
        except OSError:
            continue
    try:
        with open("/proc/1/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep and key.startswith("RUNPOD_"):
                    found.setdefault(key, value)
    except OSError:
        pass
    for key in ("RUNPOD_POD_ID", "RUNPOD_API_KEY"):
        if os.environ.get(key):
            found[key] = os.environ[key]
    return found


def say(log: str, text: str) -> None:
    line = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + " " + text + "\n"
    try:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError:
        sys.stderr.write(line)


def deadline(at: float, log: str) -> float:
    try:
        with open(log + ".at", encoding="utf-8") as fh:
            return float(fh.read().strip())
    except (OSError, ValueError):
        return at


def terminate(api_url: str, pod_id: str, key: str) -> tuple[bool, str]:
    """True when the pod is gone (204, or 404: already gone)."""
    request = urllib.request.Request(f"{api_url.rstrip('/')}/pods/{pod_id}", method="DELETE",
                                     headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return True, f"DELETE answered {response.status}"
    except urllib.error.HTTPError as http:
        if http.code == 404:
            return True, "DELETE answered 404 (already gone)"
        try:
            detail = json.loads(http.read() or b"{}").get("detail", "")
        except ValueError:
            detail = ""
        return False, f"DELETE answered {http.code} {detail}".replace(key, "***")
    except (urllib.error.URLError, OSError) as exc:
        return False, f"DELETE failed: {getattr(exc, 'reason', exc)}".replace(key, "***")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=float, required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--env-file", action="append", default=[])
    parser.add_argument("--log", default="pod_deadline.log")
    args = parser.parse_args(argv)
    env = pod_env(args.env_file or ["/etc/rp_environment"])
    pod_id, key = env.get("RUNPOD_POD_ID", ""), env.get("RUNPOD_API_KEY", "")
    if not pod_id or not key:
        say(args.log, "no RUNPOD_POD_ID / RUNPOD_API_KEY in this pod's environment: cannot end the pod at its deadline")
        return 2
    say(args.log, f"pod {pod_id} ends at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(deadline(args.at, args.log)))}")
    while True:
        left = deadline(args.at, args.log) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 5.0))
    while True:  # retry until the API answers: a billing pod is worse than a noisy log
        ok, what = terminate(args.api_url, pod_id, key)
        say(args.log, f"deadline reached: terminating pod {pod_id}: {what}")
        if ok:
            return 0
        time.sleep(RETRY_S)


if __name__ == "__main__":
    sys.exit(main())
