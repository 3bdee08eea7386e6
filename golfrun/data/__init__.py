"""golfrun.data"""
