"""Hyper-parameter search over training flags with keras-tuner (space.py: the search space
file; tuner.py: trials as tfimitate.train runs; trials.py: where each trial's run and result
live; results.py: what a search found)."""
