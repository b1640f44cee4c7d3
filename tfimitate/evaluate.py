"""Evaluate a trained model: `python -m tfimitate.evaluate --model_dir=runs/x [--eval_data=FILE]`.

Prints a report and writes <model_dir>/eval/metrics.json (and a confusion-matrix PNG).
`--perturb=typos:0.1,case,drop_words:0.1` adds the robustness report
eval/robustness.json; `--saved_model=DIR` scores an exported model instead.
"""

from tfimitate import flags as tf_flags
from tfimitate import workflow
from tfimitate.errors import run_cli


def main(argv):
    del argv
    workflow.evaluate(*(tf_flags.value(name) for name in (
        "model_dir", "eval_data", "perturb", "perturb_seed", "saved_model")))


if __name__ == "__main__":
    run_cli(main)
