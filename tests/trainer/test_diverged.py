"""A run whose training diverges (the loss turns NaN) ends with one clear error naming the cause,
before GPTQ works on NaN weights, and keeps final_model.pt. The real train_gpt.py as a subprocess at
tiny sizes, forced to diverge by learning rates of 1e30."""
from __future__ import annotations

from tests.trainer.conftest import run_trainer

DIVERGE = {"ITERATIONS": "4", "MATRIX_LR": "1e30", "SCALAR_LR": "1e30", "TIED_EMBED_LR": "1e30", "EMBED_LR": "1e30",
           "HEAD_LR": "1e30"}


def test_a_diverged_training_run_fails_naming_the_cause(tiny_data, tmp_path) -> None:
    proc = run_trainer(tiny_data, tmp_path, DIVERGE, check=False)
    assert proc.returncode != 0
    assert "train_loss: nan" in proc.stdout  # it did diverge
    assert "weight tensor(s) are not finite (NaN/Inf)" in proc.stderr and "training diverged" in proc.stderr
    assert "not positive definite" not in proc.stderr
    assert (tmp_path / "final_model.pt").is_file() and not (tmp_path / "results.json").exists()
    assert not (tmp_path / "final_model.int6.ptz").exists()
