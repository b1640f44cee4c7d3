"""Search training flags: `python -m tfimitate.tune --flagfile=configs/sst2_minilm.cfg
--search_space=configs/search/sst2.cfg --tuner=random --max_trials=8 --tune_dir=runs/tune_sst2`.

Every trial is a `tfimitate.train` run in <tune_dir>/trials/<id>/ (the flagfile's flags
plus the trial's searched values); keras-tuner chooses the values. Re-running the same
command continues a search that was stopped or killed. At the end, results.csv,
results.png and best.cfg are written to --tune_dir and a markdown table is printed.
With keras-tuner's KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
set, one process (TUNER_ID `chief`) serves the oracle and the others run trials.
"""

from absl import flags

from tfimitate import flags as _flags
from tfimitate import config
from tfimitate.errors import UserError, run_cli
from tfimitate.search import space


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected argument '{argv[1]}'; every setting is a --flag (see --help).")
    for name in ("search_space", "tune_dir"):
        if not _flags.value(name):
            raise UserError(f"--{name} is required; give it on the command line.")
    dimensions = space.read(_flags.value("search_space"))
    from tfimitate.search import tuner  # imports TensorFlow: after the quick checks

    if not flags.FLAGS["model_dir"].value:  # every trial trains into its own folder
        flags.FLAGS.model_dir = _flags.value("tune_dir")
    summary = tuner.search(config.experiment_from_flags(), dimensions, *(
        _flags.value(name) for name in ("tuner", "max_trials", "tune_dir", "hyperband_factor")))
    if summary is not None:
        print(f"\n{summary}", flush=True)


if __name__ == "__main__":
    run_cli(main)
