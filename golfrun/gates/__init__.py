"""golfrun.gates"""
