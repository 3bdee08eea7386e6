"""golfrun.pipeline"""
