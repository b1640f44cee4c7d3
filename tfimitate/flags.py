"""The command line: absl flags generated from the declared options, and the entry points' own.

Every option is declared once by its owner (tfimitate/options.py); this module turns the
experiment's options (config.OPTIONS) and the options only an entry point reads
(CLI_OPTIONS) into absl flags. Override order: flag defaults, then the `--flagfile`, then
the command line (absl reads arguments left to right, so put `--flagfile` first); a
task's or technique's recipe may change a default the user left unset, and the flag's help
says which (tfimitate/recipes.py). Only the
entry points import this module; library code never reads flags.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --epochs=1
    value("model_dir")     # in an entry point, after absl parsed the command line
"""

from tfimitate import config, options, recipes

# Options of evaluate, predict, export, tune and prepare that are not part of an experiment.
CLI_OPTIONS = options.merge((
    options.string(
        "perturb", "",
        "evaluate: robustness report, NAME[:RATE],...: typos (one character swapped, "
        "deleted, inserted or replaced by a keyboard neighbour in RATE of the words, default "
        "0.1), case (RATE of the words upper-cased, default 1), drop_words (default 0.1; not "
        "for token_classification). Writes eval/robustness.json: clean vs perturbed score "
        "and the examples whose prediction flipped."),
    options.integer(
        "perturb_seed", 0,
        "evaluate: seed of --perturb (keep it to compare models on the same texts)."),
    options.string(
        "saved_model", None,
        "evaluate: score this exported SavedModel version directory through its serving "
        "signatures instead of the checkpoint (task, labels and data from --model_dir, or "
        "from the run it was exported from)."),
    options.string(
        "search_space", None,
        "tune: file of flags to search, one per line: --learning_rate=log_uniform(1e-5,1e-4), "
        "--dropout=uniform(0,0.3), --epochs=int_range(1,3), --batch_size=choice(16,32)."),
    options.choice(
        "tuner", "random", ["random", "bayesian", "hyperband"],
        "tune: keras-tuner's search algorithm; hyperband's budget is training steps (--max_steps)."),
    options.integer(
        "max_trials", 10,
        "tune: how many trials (training runs) to run at most.", lower=1),
    options.string(
        "tune_dir", None,
        "tune: where trials (trials/<id>/), the oracle's state, results.csv and best.cfg are "
        "written; re-running the same command continues the search."),
    options.integer(
        "hyperband_factor", 3,
        "tune --tuner=hyperband: keep the best 1/factor of each round; the shortest trials run "
        "--max_steps/factor^2 steps.", lower=2),
    options.string(
        "input", None,
        "predict: input file (.txt one text per line, or .csv/.tsv/.jsonl with "
        "--text_column; token_classification: .txt sentences or CoNLL/JSONL words)."),
    options.string(
        "output", None,
        "predict: output file, .jsonl or .csv."),
    options.integer(
        "export_version", None,
        "export: version number to write (default: one more than the newest).", lower=1),
    options.string(
        "output_dir", None,
        "prepare: new or empty directory (any file system) for the tokenized TFRecord shards "
        "and manifest.json; train with --train_data=<it>."),
    options.string(
        "runner", "DirectRunner",
        "prepare: Apache Beam runner (DirectRunner on this machine; DataflowRunner with "
        "Beam's --project, --region, --temp_location, ...)."),
    options.integer(
        "num_shards", 16,
        "prepare: TFRecord shards per split (each host of a cluster reads its own: give at "
        "least as many as hosts).", lower=1),
))

HOLDERS = options.define_flags(recipes.noted(options.merge(config.OPTIONS, CLI_OPTIONS)))


def value(name):
    """The parsed value of flag `--name`."""
    return HOLDERS[name].value
