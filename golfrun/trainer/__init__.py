"""golfrun.trainer"""
