"""golfrun.transport"""
