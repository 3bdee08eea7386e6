"""The REST v2 client against the loopback RunPod API (tests/fixtures/runpod_server.py).

The real API cannot be reached from the test machines; the fake follows the published v2 spec
(runpod-api.md): Bearer auth, problem+json errors, status-dependent actions, injected faults.
"""

from __future__ import annotations

import time

import pytest

from golfrun.backends.runpod.api import DEFAULT_API_URL, CapacityError, RetryPolicy, RunpodApiError, RunpodClient
from golfrun.errors import BackendError
from tests.fixtures.runpod_server import FakeRunpod

BODY = {"name": "golfrun-t-abc123", "image": "img", "gpu": {"id": "NVIDIA L40S", "count": 1}, "cloud": "SECURE",
        "disk": 20, "ports": ["22/tcp"], "env": {"A": "1"}}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(fake: FakeRunpod, sleeps: Sleeps | None = None, deadline_s: float = 60.0) -> RunpodClient:
    return RunpodClient(api_key=fake.token, base_url=fake.url, retry=RetryPolicy(deadline_s=deadline_s, first_backoff_s=0.01),
                        sleep=sleeps if sleeps is not None else Sleeps())


def wait_status(c: RunpodClient, pod_id: str, status: str) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        pod = c.get_pod(pod_id)
        if pod is not None and pod.status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"pod {pod_id} never {status}")


def test_from_env_requires_the_key_and_defaults_the_url() -> None:
    with pytest.raises(BackendError, match="RUNPOD_API_KEY is not set"):
        RunpodClient.from_env({})
    c = RunpodClient.from_env({"RUNPOD_API_KEY": "k" * 20})
    assert c.base_url == DEFAULT_API_URL == "https://api.runpod.io/v2"
    assert "k" * 20 not in repr(c)


def test_pod_lifecycle_create_get_list_actions_delete(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    pod = c.create_pod(BODY)
    assert pod.status == "PROVISIONING" and pod.ssh_direct is None and pod.cost_per_hr == pytest.approx(0.86)
    assert [p.id for p in c.find_pods(BODY["name"])] == [pod.id]
    wait_status(c, pod.id, "RUNNING")
    running = c.get_pod(pod.id)
    assert running is not None and running.ssh_direct is not None
    assert running.ssh_direct.port == fake_runpod.ssh_port and running.runtime_gpus == 1
    stopped = c.stop(pod.id)
    assert stopped is not None and stopped.status == "EXITED" and stopped.cost_per_hr == 0.0 and stopped.ssh_direct is None
    with pytest.raises(RunpodApiError, match=r"409 Conflict: action stop not allowed while EXITED") as err:
        c.stop(pod.id)
    assert err.value.status == 409
    assert c.terminate(pod.id) is True
    assert c.get_pod(pod.id) is None
    assert c.terminate(pod.id) is False  # 404 on a second delete means "already gone"
    assert c.list_pods() == []


def test_bad_key_gives_401_without_echoing_the_key(fake_runpod: FakeRunpod) -> None:
    wrong = "rpa_WRONGKEY_0123456789"
    c = RunpodClient(api_key=wrong, base_url=fake_runpod.url, sleep=Sleeps())
    with pytest.raises(RunpodApiError) as err:
        c.list_pods()
    assert err.value.status == 401 and "check RUNPOD_API_KEY" in str(err.value)
    assert wrong not in str(err.value) and fake_runpod.token not in str(err.value)


def test_unknown_body_key_is_a_422_with_the_validation_errors(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    with pytest.raises(RunpodApiError, match=r"422 Unprocessable Entity.*additional properties 'interruptible' not allowed"):
        c.create_pod({**BODY, "interruptible": True})
    assert fake_runpod.count("POST", "/v2/pods") == 1  # a 422 is never retried


def test_429_honours_retry_after(fake_runpod: FakeRunpod) -> None:
    sleeps = Sleeps()
    c = client(fake_runpod, sleeps)
    fake_runpod.fail_next("GET", "/v2/pods", 429, retry_after=7)
    assert c.list_pods() == []
    assert sleeps == [7.0]


def test_5xx_backs_off_and_gives_up_at_the_deadline(fake_runpod: FakeRunpod) -> None:
    sleeps = Sleeps()
    c = client(fake_runpod, sleeps)
    fake_runpod.fail_next("GET", "/v2/pods", 503, count=3)
    assert c.list_pods() == []
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]  # growing back-off
    fake_runpod.fail_next("GET", "/v2/pods", 500, count=1000)
    with pytest.raises(RunpodApiError, match=r"500 Internal Server Error: injected fault \(gave up after 0s\)"):
        client(fake_runpod, Sleeps(), deadline_s=0.05).list_pods()
    fake_runpod.faults.clear()


def test_lost_create_reply_is_found_by_name_not_created_twice(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    fake_runpod.fail_next("POST", "/v2/pods", 500, after_processing=True)  # the pod exists, the reply is lost
    pod = c.create_pod(BODY)
    assert fake_runpod.count("POST", "/v2/pods") == 1
    assert fake_runpod.live_pods() == [pod.id]
    c.terminate(pod.id)


def test_create_failed_before_processing_is_posted_again_after_listing(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    fake_runpod.fail_next("POST", "/v2/pods", 503)
    pod = c.create_pod(BODY)
    assert fake_runpod.count("POST", "/v2/pods") == 2
    assert fake_runpod.count("GET", "/v2/pods") == 1  # looked before posting again
    assert fake_runpod.live_pods() == [pod.id]
    c.terminate(pod.id)


def test_create_429_is_retried_after_retry_after(fake_runpod: FakeRunpod) -> None:
    sleeps = Sleeps()
    c = client(fake_runpod, sleeps)
    fake_runpod.fail_next("POST", "/v2/pods", 429, retry_after=3)
    pod = c.create_pod(BODY)
    assert sleeps == [3.0] and fake_runpod.live_pods() == [pod.id]
    c.terminate(pod.id)


def test_capacity_400_names_gpu_and_data_centers(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    fake_runpod.fail_next("POST", "/v2/pods", 400)
    with pytest.raises(CapacityError, match=r"no capacity for 8x NVIDIA H100 80GB HBM3 in EU-RO-1, US-TX-3 \(SECURE cloud\): There are no longer"):
        c.create_pod({**BODY, "gpu": {"id": "NVIDIA H100 80GB HBM3", "count": 8}, "dataCenterIds": ["EU-RO-1", "US-TX-3"]})
    assert fake_runpod.count("POST", "/v2/pods") == 1 and fake_runpod.live_pods() == []


def test_402_is_not_retried_and_says_why(fake_runpod: FakeRunpod) -> None:
    c = client(fake_runpod)
    fake_runpod.fail_next("POST", "/v2/pods", 402, detail="insufficient funds")
    with pytest.raises(RunpodApiError, match=r"402 Payment Required: insufficient funds \(insufficient balance\)"):
        c.create_pod(BODY)
    assert fake_runpod.count("POST", "/v2/pods") == 1


def test_unreachable_api_is_a_clear_error() -> None:
    c = RunpodClient(api_key="x" * 16, base_url="http://127.0.0.1:9/v2", retry=RetryPolicy(deadline_s=0.01, first_backoff_s=0.01), sleep=Sleeps())
    with pytest.raises(RunpodApiError, match=r"cannot reach http://127.0.0.1:9/v2"):
        c.list_pods()
