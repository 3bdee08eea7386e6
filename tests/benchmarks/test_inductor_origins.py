"""benchmarks/inductor_origins.py: which ops a profiled Inductor kernel computes, from the comments Inductor writes
above each kernel of a compiled graph's wrapper module. The Triton wrapper below is written to the format of
torch/_inductor/codegen/triton.py's define_kernel (kernel path, source nodes, ATen ops, graph fragment), since no GPU
compiles Triton kernels here; a real CPU compile (C++ kernels, which get no comments) checks the lookup in
Inductor's own code cache."""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import inductor_origins as io  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "inductor-wrapper-triton.txt"


def test_definitions_read_each_kernels_comment_and_sizes():
    defs = io.definitions(FIXTURE.read_text())
    assert list(defs) == ["triton_red_fused_mul_sum_3", "triton_per_fused_clamp_min_div_linalg_vector_norm_6"]
    red = defs["triton_red_fused_mul_sum_3"]
    assert red["origin"][0] == "# kernel path: /tmp/torchinductor_root/ab/cabxyz.py"
    assert red["origin"][1] == "# Topologically Sorted Source Nodes: [], Original ATen: [aten.mul, aten.sum]"
    assert red["origin"][-1].startswith("#   %sum_3 : Tensor \"f32[512][1]cuda:0\"") and len(red["origin"]) == 9
    assert red["numels"] == {"xnumel": 512, "r0_numel": 98304}  # a sum over 98,304 tokens for each of 512 channels
    norm = defs["triton_per_fused_clamp_min_div_linalg_vector_norm_6"]
    assert norm["origin"][1].endswith("Original ATen: [aten.linalg_vector_norm, aten.clamp_min, aten.div]")
    assert norm["numels"] == {"xnumel": 393216, "r0_numel": 64} and len(norm["origin"]) == 4


def test_a_name_is_read_from_the_wrapper_defining_most_of_the_profiles_kernels(tmp_path):
    """Kernel names repeat across graphs (each numbers its own): the wrapper defining most of the names asked
    for is the profiled graph's; the comment is capped."""
    text = FIXTURE.read_text()
    other = ("# kernel path: elsewhere\ntriton_red_fused_mul_sum_3 = async_compile.triton('x', '''\n"
             "    xnumel = 8\n''', device_str='cuda')\n")
    for folder, body in (("aa", other), ("bb", text), ("cc", "import triton\n@triton.jit\ndef k(): pass\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"c{folder}.py").write_text(body)
    assert sorted(str(p.relative_to(tmp_path)) for p in io.wrappers(tmp_path)) == ["aa/caa.py", "bb/cbb.py"]
    got = io.kernel_origins(tmp_path, ["triton_red_fused_mul_sum_3", "triton_per_fused_clamp_min_div_linalg_vector_norm_6",
                                       "triton_poi_fused_add_9"])
    assert set(got) == {"triton_red_fused_mul_sum_3", "triton_per_fused_clamp_min_div_linalg_vector_norm_6"}
    assert got["triton_red_fused_mul_sum_3"]["file"] == "bb/cbb.py"
    assert got["triton_red_fused_mul_sum_3"]["numels"] == {"xnumel": 512, "r0_numel": 98304}
    fragment = "".join(f"#   %node_{i} : Tensor\n" for i in range(100))  # a graph fragment of 100 nodes
    origin = io.definitions(text.replace("# Graph fragment:\n", "# Graph fragment:\n" + fragment, 1))
    origin = origin["triton_red_fused_mul_sum_3"]["origin"]
    assert len(origin) == io.MAX_COMMENT_LINES and origin[0].startswith("# kernel path:")  # its head kept


def test_largest_origins_looks_up_a_phases_largest_kernels(tmp_path):
    """The LARGEST kernels of a phase by time, looked up; an unreadable cache is said, not raised."""
    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / "cbb.py").write_text(FIXTURE.read_text())
    rows = [(f"triton_poi_fused_add_{i}", 1.0, 11) for i in range(io.LARGEST - 1)]
    rows += [("triton_red_fused_mul_sum_3", 8.27, 88), ("triton_per_fused_clamp_min_div_linalg_vector_norm_6", 0.5, 88)]
    assert list(io.largest_origins(rows, tmp_path)) == ["triton_red_fused_mul_sum_3"]  # the norm is ninth largest
    (tmp_path / "cc").mkdir()
    (tmp_path / "cc" / "ccc.py").symlink_to(tmp_path / "gone")  # a file of the cache removed while it is read
    assert io.largest_origins(rows, tmp_path)["error"].startswith("FileNotFoundError")


_COMPILE = """
import torch
def f(x, w):
    y = x * w
    return (y * x).sum(0), torch.nn.functional.normalize(y, dim=-1)
x, w = torch.randn(64, 32, requires_grad=True), torch.randn(32, requires_grad=True)
a, b = torch.compile(f)(x, w)
(a.sum() + b.sum()).backward()
"""


def test_a_real_compile_is_found_in_inductors_code_cache(tmp_path):
    """Inductor on the CPU, its cache in tmp_path: every kernel of the forward and backward wrappers is found
    by name, in the wrapper that defines it."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    parsed = io.wrappers(tmp_path)
    assert len(parsed) >= 2  # the forward graph and the backward graph
    names = [n for defs in parsed.values() for n in defs]
    assert names and all(n.startswith("cpp_fused_") for n in names)
    got = io.kernel_origins(tmp_path, names)
    assert set(got) == set(names)
    for name, found in got.items():
        assert name in parsed[tmp_path / found["file"]] and found["origin"] == []  # C++ kernels: no comment
