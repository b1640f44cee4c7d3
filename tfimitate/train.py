"""Train a model from a flagfile: `python -m tfimitate.train --flagfile=configs/quickstart.cfg`.

Flags are defined in tfimitate/flags.py; the command line overrides the
flagfile. Re-running the same command resumes from the last checkpoint.
"""

from tfimitate import flags as _flags  # noqa: F401  (defines the flags)
from tfimitate import config, workflow
from tfimitate.errors import UserError, run_cli


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected argument '{argv[1]}'; every setting is a --flag (see --help).")
    workflow.train(config.experiment_from_flags())


if __name__ == "__main__":
    run_cli(main)
