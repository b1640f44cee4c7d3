"""Where a search keeps its trials: <tune_dir>/trials/<id>/, each with its trial_result.json.

The tuner writes a trial's result when the trial's run ends; the results read them back.

Example:
    write_result(trial_dir("runs/tune_sst2", "0"), score=0.91, steps=200, seconds=84.2)
    read_result(trial_dir("runs/tune_sst2", "0"))  # {"score": 0.91, "steps": 200, ...}
"""

import json
import os

from tfimitate import files

TRIALS_DIR = "trials"
RESULT_FILE = "trial_result.json"


def trial_dir(tune_dir, trial_id):
    """The run directory (model_dir) of trial `trial_id` of the search in `tune_dir`."""
    return os.path.join(tune_dir, TRIALS_DIR, trial_id)


def write_result(model_dir, score, steps, seconds):
    """Records the outcome of the trial run in `model_dir` (its eval score, training steps
    and wall-clock seconds)."""
    files.write_atomically(os.path.join(model_dir, RESULT_FILE), json.dumps(
        {"score": score, "steps": steps, "seconds": seconds}))


def read_result(model_dir):
    """{"score", "steps", "seconds"} of the trial run in `model_dir`; {} while it has none."""
    path = os.path.join(model_dir, RESULT_FILE)
    return json.loads(files.read_bytes(path)) if files.isfile(path) else {}
