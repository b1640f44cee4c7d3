"""Export a trained model for TF Serving: `python -m tfimitate.export --model_dir=runs/x --export_dir=saved_models/x`.

Writes <export_dir>/<version>/ atomically after an op audit and a parity check; with
--export_precision=bfloat16|int8|auto, after an accuracy gate on the run's eval data.
"""

from absl import flags

from tfimitate import flags as tf_flags
from tfimitate import workflow
from tfimitate.errors import run_cli


def main(argv):
    del argv
    workflow.export(*(tf_flags.value(name) for name in (
        "model_dir", "export_dir", "export_version", "serving_version", "export_precision",
        "export_max_drop")))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "export_dir"])
    run_cli(main)
