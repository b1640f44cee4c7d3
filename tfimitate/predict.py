"""Predict with a trained model: `python -m tfimitate.predict --model_dir=runs/x --input=in.txt --output=out.jsonl`.

The input is a .txt file (one text per line), a .csv/.tsv/.jsonl read with --text_column,
or a TFDS split (`--input=tfds:glue/sst2:validation`, with --tfds_data_dir); the output
(.jsonl or .csv) has the label and probabilities per row.
"""

from absl import flags

from tfimitate import flags as tf_flags
from tfimitate import workflow
from tfimitate.errors import run_cli


# Flags that describe the input file; given on the command line they override the run's own.
INPUT_FLAGS = ("text_column", "text_pair_column", "image_column", "tfds_data_dir")


def main(argv):
    del argv
    columns = {name: flags.FLAGS[name].value for name in INPUT_FLAGS if flags.FLAGS[name].present}
    workflow.predict(tf_flags.value("model_dir"), tf_flags.value("input"),
                     tf_flags.value("output"), columns)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "input", "output"])
    run_cli(main)
