"""The one machine probe (golfrun/machine.py): its pure parsers on captured nvidia-smi output
(tests/fixtures/machine/README.md says where each came from), and the real probe on this CPU
machine through the interpreter that runs the tests."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from golfrun import machine
from golfrun.machine import Fingerprint, fingerprint, form_factor, gpu_model, hardware_key, parse_gpu_query, parse_topology

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "machine"


def test_topology_of_a_dgx_h100_is_nvlink_nv18_on_every_pair() -> None:
    topo = parse_topology((FIX / "topo-dgx-h100.txt").read_text())
    assert topo["gpus"] == 8 and topo["links"] == {"NV18": 28}  # 8·7/2 pairs
    assert topo["summary"] == "NVLink NV18"


def test_topology_ignores_nic_columns_and_reads_a_partial_matrix() -> None:
    topo = parse_topology((FIX / "topo-dgx-a100-excerpt.txt").read_text())
    assert topo["gpus"] == 8 and set(topo["links"]) == {"NV12"}  # the PXB/SYS cells are NICs
    assert topo["summary"] == "NVLink NV12"


def test_topology_of_pcie_cards_single_gpu_and_nothing() -> None:
    pcie = "\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tPHB\t0-31\nGPU1\tPHB\t X \t0-31\n"
    assert parse_topology(pcie)["summary"] == "PCIe PHB"
    mixed = "\tGPU0\tGPU1\tGPU2\nGPU0\t X \tNV4\tSYS\nGPU1\tNV4\t X \tSYS\nGPU2\tSYS\tSYS\t X \n"
    assert parse_topology(mixed)["summary"] == "mixed NV4+SYS"
    single = "\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\nGPU0\t X \t0-15\t0\t\tN/A\n"
    assert parse_topology(single) == {"gpus": 1, "links": {}, "summary": "single"}
    assert parse_topology("")["summary"] == ""


def test_captured_h200_output_one_gpu_with_an_underlined_header() -> None:
    raw = (FIX / "topo-h200-1gpu.txt").read_text()
    assert "\x1b[4m" in raw  # as captured
    assert parse_topology(raw) == {"gpus": 1, "links": {}, "summary": "single"}
    [gpu] = parse_gpu_query((FIX / "query-h200.csv").read_text())
    assert (gpu["name"], gpu["memory_mib"], gpu["power_max_w"]) == ("NVIDIA H200", 143771, 700.0)
    assert (gpu_model(gpu["name"]), form_factor(gpu["name"], gpu["power_max_w"])) == ("H200", "SXM")


def test_gpu_query_parses_name_memory_driver_and_power() -> None:
    gpus = parse_gpu_query((FIX / "query-h100-sxm.csv").read_text())
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver_version": "550.127.05",
                       "pci_bus_id": "00000000:18:00.0", "power_max_w": 700.0}
    assert parse_gpu_query("garbage\n\n") == []
    assert parse_gpu_query("0, NVIDIA H200, 143771, 570.86.15, 00000000:19:00.0, [N/A]")[0]["power_max_w"] is None


@pytest.mark.parametrize("name, power, model, ff", [
    ("NVIDIA H100 80GB HBM3", None, "H100", "SXM"),
    ("NVIDIA H100 PCIe", None, "H100", "PCIe"),
    ("NVIDIA H100 NVL", None, "H100", "NVL"),
    ("NVIDIA H200", None, "H200", "SXM"),
    ("NVIDIA H200 NVL", None, "H200", "NVL"),
    ("NVIDIA A100-SXM4-80GB", None, "A100", "SXM"),
    ("NVIDIA A100 80GB PCIe", None, "A100", "PCIe"),
    ("NVIDIA L40S", 350.0, "L40S", "PCIe"),
    ("NVIDIA B200", 1000.0, "B200", "SXM"),
    ("NVIDIA RTX 6000 Ada Generation", None, "RTX 6000 Ada Generation", "unknown"),
])
def test_model_and_form_factor_from_the_name_then_the_power_limit(name: str, power: float | None, model: str, ff: str) -> None:
    assert gpu_model(name) == model
    assert form_factor(name, power) == ff


def test_fingerprint_and_hardware_key() -> None:
    facts = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "nccl": "2.27.7", "attention": ["fa3", "sdpa"],
             "devices": [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81089}] * 2}
    smi = {"gpus": parse_gpu_query((FIX / "query-h100-sxm.csv").read_text()), "driver_version": "550.127.05",
           "topology": {"summary": "NVLink NV18"}}
    fp = fingerprint(facts, smi, {"commit": "abc", "dirty": True})
    assert (fp.gpu_model, fp.form_factor, fp.gpu_count, fp.gpu_memory_mib) == ("H100", "SXM", 2, 81559)
    assert (fp.driver, fp.nccl, fp.attention, fp.interconnect) == ("550.127.05", "2.27.7", ("fa3", "sdpa"), "NVLink NV18")
    assert fp.git_commit == "abc" and fp.git_dirty
    # the key follows the hardware, not the code: another commit keeps it, a PCIe card changes it
    other_code = fingerprint(facts, smi, {"commit": "def", "dirty": False})
    assert hardware_key(other_code) == hardware_key(fp)
    pcie = dict(smi, gpus=[dict(g, name="NVIDIA H100 PCIe", power_max_w=350.0) for g in smi["gpus"]])
    assert fingerprint(facts, pcie, None).form_factor == "PCIe"
    assert hardware_key(fingerprint(facts, pcie, None)) != hardware_key(fp)
    assert Fingerprint.from_dict(fp.to_dict()) == fp and fp.to_dict()["hardware_key"] == hardware_key(fp)
    # another driver build: the compile cache starts afresh, the job results still hold
    other_driver = dataclasses.replace(fp, driver="570.86.15")
    assert hardware_key(other_driver) != hardware_key(fp) and machine.result_key(other_driver) == machine.result_key(fp)
    # torch's device list stands in when nvidia-smi is absent; a CPU machine has no GPU fields
    assert fingerprint(facts, {"present": False}, None).gpu_count == 2
    cpu = fingerprint({"python": "3.12.3", "torch": "2.13.0+cpu"}, {"present": False}, None)
    assert (cpu.gpu_count, cpu.form_factor, cpu.interconnect) == (0, "", "")
    assert "CPU" in cpu.describe()


def test_the_real_probe_on_this_machine_never_imports_torch_into_golfrun(tmp_path: Path) -> None:
    m = machine.probe(sys.executable, packages=["json", "no_such_package_xyz"], torch="no",
                      git_folder=Path(__file__).resolve().parent)
    assert m.facts["packages"]["json"]["importable"] and not m.facts["packages"]["no_such_package_xyz"]["importable"]
    assert m.facts["torch"].startswith("2.")  # read from torch/version.py, not imported
    assert m.fingerprint.python == sys.version.split()[0]
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert m.fingerprint.git_commit == head.stdout.strip()
    machine.write_machine(tmp_path, m.fingerprint)
    assert machine.read_machine(tmp_path) == m.fingerprint
    assert machine.campaign_result_key(tmp_path) == machine.result_key(m.fingerprint)
    assert machine.campaign_result_key(tmp_path / "none") == "unprobed"


def test_a_broken_interpreter_is_a_machine_error(tmp_path: Path) -> None:
    with pytest.raises(machine.MachineError, match="machine probe failed"):
        machine.probe_interpreter(str(tmp_path / "no-python"))


def test_every_summary_names_the_machine_and_other_hardware_reruns_the_jobs(tmp_path: Path, shared_data: Path) -> None:
    from click.testing import CliRunner

    from golfrun.cli import main
    from tests.fixtures.pipeline_campaign import write_campaign

    write_campaign(tmp_path, shared_data)
    base = ["--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(main, ["run-all", *base]).exit_code == 0
    cdir = tmp_path / "runs" / "t"
    fp = machine.read_machine(cdir)
    assert fp is not None
    for path in sorted(cdir.glob("0*/summary.json")):
        assert json.loads(path.read_text())["machine"]["hardware_key"] == hardware_key(fp), path
    launches = (tmp_path / "launches.txt").read_text().count("\n")
    # the same campaign and runs folder on an H100 (as verify-pod would record it there): gate-a's
    # stage and its job are not served from what this CPU machine produced
    machine.write_machine(cdir, dataclasses.replace(fp, gpu_model="H100", form_factor="SXM", gpu_count=1))
    out = CliRunner().invoke(main, ["gate-a", *base])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "launches.txt").read_text().count("\n") == launches + 1
    gate_a = json.loads((cdir / "02-gate-a" / "summary.json").read_text())
    assert gate_a["machine"]["gpu_model"] == "H100" and gate_a["jobs"][0]["cached"] is False
