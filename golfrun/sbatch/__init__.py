"""golfrun.sbatch"""
