"""Predict with a trained model: `python -m tfimitate.predict --model_dir=runs/x --input=in.txt --output=out.jsonl`.

The input is a .txt file (one text per line) or a .csv/.tsv/.jsonl read with
--text_column; the output (.jsonl or .csv) has the label and probabilities per row.
"""

from absl import flags

from tfimitate import flags as tf_flags
from tfimitate import workflow
from tfimitate.errors import run_cli


def main(argv):
    del argv
    workflow.predict(tf_flags.MODEL_DIR.value, tf_flags.INPUT.value, tf_flags.OUTPUT.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "input", "output"])
    run_cli(main)
