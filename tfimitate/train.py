"""Train a model from a flagfile: `python -m tfimitate.train --flagfile=configs/quickstart.cfg`.

Flags are defined in tfimitate/flags.py; the command line overrides the
flagfile, and both override the values a task's or technique's recipe chooses (logged
first, recorded in experiment.json). Re-running the same command resumes from the last
checkpoint.
"""

from absl import logging

from tfimitate import flags as _flags  # noqa: F401  (defines the flags)
from tfimitate import config, recipes, workflow
from tfimitate.errors import UserError, run_cli


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected argument '{argv[1]}'; every setting is a --flag (see --help).")
    cfg = config.experiment_from_flags()
    for line in recipes.chosen_lines(cfg):
        logging.info("Recipe: %s; set the flag to choose otherwise.", line)
    workflow.train(cfg)


if __name__ == "__main__":
    run_cli(main)
