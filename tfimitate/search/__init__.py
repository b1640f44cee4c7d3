"""Hyper-parameter search over training flags with keras-tuner (space.py: the search space
file; tuner.py: trials as tfimitate.train runs; results.py: what a search found)."""
