"""golfrun.campaign"""
