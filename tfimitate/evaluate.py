"""Evaluate a trained model: `python -m tfimitate.evaluate --model_dir=runs/x [--eval_data=FILE]`.

Prints a report and writes <model_dir>/eval/metrics.json (and a confusion-matrix PNG).
"""

from absl import flags

from tfimitate import flags as tf_flags
from tfimitate import workflow
from tfimitate.errors import run_cli


def main(argv):
    del argv
    workflow.evaluate(tf_flags.MODEL_DIR.value, tf_flags.EVAL_DATA.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    run_cli(main)
