"""golfrun.provenance"""
