"""Campaign runners: where a campaign's control runs (`local`, `slurm`, `runpod`); see base.py."""
