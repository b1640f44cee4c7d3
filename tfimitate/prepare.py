"""Tokenize training data once, on Apache Beam, into shards that `train` streams.

    python -m tfimitate.prepare --flagfile=configs/sst2_minilm.cfg --output_dir=prepared/sst2
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --train_data=prepared/sst2

It reads train's own data, column, label, hold-out, side column (--numeric_columns,
--categorical_columns: their preprocessing is learned on the train shards' rows and kept in
the manifest) and backbone flags (text_classification, texts and text pairs) and writes
GZIP TFRecord shards plus manifest.json to --output_dir
(tfimitate/preparation.py is the pipeline, data/prepared.py reads it). --runner picks the
Beam runner (DirectRunner by default); Beam's own pipeline options go on the command line
as they are, e.g. `--runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp`.
"""

import functools
import os
import re
import sys
import time

from absl import flags as absl_flags
from absl import logging

from tfimitate import flags as _flags  # noqa: F401  (defines the flags)
from tfimitate import backbones, config, files
from tfimitate.data import prepared, readers, tfds_source
from tfimitate.errors import UserError, run_cli
from tfimitate.tasks import side_features

SUPPORTED_TASKS = ("text_classification",)
PATTERN = re.compile(r"[*?\[]")


def main(argv, beam_args=()):
    if len(argv) > 1:
        raise UserError(f"unexpected argument '{argv[1]}'; every setting is a --flag (see --help).")
    run(_experiment(), _flags.value("output_dir"), _flags.value("num_shards"),
        _flags.value("runner"), beam_args)


def run(cfg, output_dir, num_shards=16, runner="DirectRunner", beam_args=()):
    """Checks the flags and inputs, prepares `cfg`'s data into `output_dir` (new or empty)
    and returns the Manifest; on any failure the shards written so far are removed.

    Example:
        run(Experiment(train_data="train.tsv", text_column="0", label_column="1"), "prepared/t")
    """
    _check(cfg, output_dir)
    options = pipeline_options(runner, beam_args)
    inputs = {role: expand(getattr(cfg, f"{role}_data"), f"--{role}_data")
              for role in ("train", "eval", "test") if getattr(cfg, f"{role}_data")}
    _check_side_inputs(cfg, inputs)
    created = _claim_output_dir(output_dir)
    try:
        return prepare(cfg, inputs, output_dir, num_shards, options)
    except BaseException:
        _remove_outputs(output_dir, created)
        raise


def prepare(cfg, inputs, output_dir, num_shards, options):
    """Runs the pipeline (tfimitate/preparation.py) and logs what the manifest says.

    Example:
        prepare(cfg, {"train": ["train.tsv"]}, "prepared/sst2", 4, pipeline_options("DirectRunner"))
    """
    import apache_beam as beam

    from tfimitate import preparation

    preprocessor = backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)
    plan = preparation.Plan(cfg, inputs, output_dir, num_shards,
                            backbones.tokenizer_fingerprint(preprocessor),
                            sorted(preprocessor(x=["a"]).keys()))
    logging.info("Preparing %s with %s on %s into %s (%d shards per split).",
                 ", ".join(f"{role}: {len(paths)} files" for role, paths in inputs.items()),
                 cfg.backbone, options.get_all_options()["runner"], output_dir, num_shards)
    runner = options.get_all_options()["runner"]
    if runner == "DirectRunner":  # Beam's FnApiRunner; not its first try, Prism (a download)
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    start = time.monotonic()
    try:
        with beam.Pipeline(runner=runner, options=options) as pipeline:
            preparation.build(pipeline, plan)
    except Exception as error:
        raise user_error(error) or error
    manifest = prepared.load(output_dir, "--output_dir")
    seconds = time.monotonic() - start
    total = sum(manifest.examples.values()) + manifest.duplicates_dropped
    logging.info("Prepared %s in %.0f s (%.0f rows/s): %s examples, %d duplicates dropped, "
                 "labels %s. Train with --train_data=%s.", output_dir, seconds,
                 total / max(seconds, 1e-9),
                 ", ".join(f"{role} {n}" for role, n in manifest.examples.items()),
                 manifest.duplicates_dropped, ",".join(manifest.labels), output_dir)
    return manifest


def _quiet_beam():
    """Beam's import-time notes about absent Google Cloud clients, and its traceback of a
    step's UserError (told once as the `error:` line), are left out of the log."""
    import logging as py_logging

    py_logging.getLogger("apache_beam.io.gcp").setLevel(py_logging.ERROR)
    for handler in py_logging.getLogger().handlers + [logging.get_absl_handler()]:
        handler.addFilter(
            lambda record: not (record.exc_info and isinstance(record.exc_info[1], UserError)))


def user_error(error):
    """The UserError a pipeline step raised, from the exception the runner re-raised
    (same type with a step name appended, or a RuntimeError quoting a worker's
    traceback), or None for any other failure."""
    if isinstance(error, UserError):
        return UserError(re.sub(r"\s*\[while running '[^']*'\]\s*$", "", str(error)))
    found = re.search(r"UserError: (.+?)(?: \[while running '[^']*'\])?$", str(error), re.MULTILINE)
    return UserError(found.group(1)) if found else None


def _experiment():
    """The Experiment of the parsed flags (prepare needs no --model_dir)."""
    values = {}
    for option in config.OPTIONS:
        value = absl_flags.FLAGS[option.name].value
        values[option.name] = tuple(value) if isinstance(value, list) else value
    return config.Experiment(**values)


def _check(cfg, output_dir):
    """Refuses what prepare cannot do, before TensorFlow is imported."""
    if cfg.task not in SUPPORTED_TASKS:
        raise UserError(f"--task={cfg.task}: tfimitate.prepare prepares text_classification "
                        "data (texts and text pairs) only; train from the raw files instead.")
    if not output_dir:
        raise UserError("--output_dir is required: say where the prepared shards go.")
    if not cfg.train_data:
        raise UserError("--train_data is required: give the files (or patterns) to prepare.")
    if cfg.labels is not None and len(set(cfg.labels)) != len(cfg.labels):
        raise UserError(f"--labels lists a label twice ({','.join(cfg.labels)}); list each once.")
    side_features.check_columns(cfg, {"--text_column": cfg.text_column,
                                      "--text_pair_column": cfg.text_pair_column,
                                      "--label_column": cfg.label_column})
    if cfg.drop_unlisted_labels and cfg.labels is None:
        raise UserError("--drop_unlisted_labels needs --labels: list the labels to keep.")
    limit = backbones.max_sequence_length(cfg.backbone)
    if limit and cfg.sequence_length > limit:
        raise UserError(f"--sequence_length={cfg.sequence_length} is longer than --backbone="
                        f"{cfg.backbone} allows ({limit}); give at most {limit}.")
    if not cfg.eval_data and not cfg.holdout_fraction > 0:
        raise UserError(f"--holdout_fraction={cfg.holdout_fraction:g} holds no evaluation data "
                        "out of --train_data; give --eval_data=FILE, or a fraction above 0.")


def _check_side_inputs(cfg, inputs):
    """Refuses side columns with TFRecord inputs (prepare reads their text and label only)."""
    if not any(side_features.columns(cfg)):
        return
    for role, paths in inputs.items():
        for path in paths:
            if readers.base_suffix(path) in (".tfrecord", ".tfrecords"):
                raise UserError(f"--{role}_data={path}: tfimitate.prepare reads side columns "
                                "(--numeric_columns/--categorical_columns) from CSV/TSV/JSONL "
                                "files and tfds: splits only; give a table, or train from the "
                                "TFRecord files themselves.")


def pipeline_options(runner, beam_args=()):
    """Beam's PipelineOptions for `runner` and Beam's own flags; UserError for a flag that
    neither tfimitate nor Beam knows, or when Apache Beam is not installed."""
    _quiet_beam()
    try:
        from apache_beam.options import pipeline_options as beam_options
    except ImportError:
        raise UserError("tfimitate.prepare needs Apache Beam; install it with "
                        "pip install 'tfimitate[prepare]' (apache-beam==2.77.0).") from None
    parser = beam_options._BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in beam_options.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # what PipelineOptions.get_all_options parses with
    _, unknown = parser.parse_known_args(list(beam_args))
    if unknown:
        raise UserError(f"{unknown[0]} is neither a tfimitate.prepare flag (see --helpfull) nor an "
                        "Apache Beam pipeline option; check its spelling.")
    return beam_options.PipelineOptions([f"--runner={runner}", *beam_args])


def expand(spec, flag):
    """The files of a data flag: a comma-separated list of paths and patterns (`*`, `?`,
    `[...]`, any file system), each pattern's matches sorted; `tfds:` specs as they are.

    Example:
        expand("data/train-*.tsv.gz,extra.tsv", "--train_data")
    """
    if prepared.is_prepared(spec):
        raise UserError(f"{flag}={spec} is already prepared; train with it, or give raw files.")
    paths = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if tfds_source.is_tfds(item):
            paths.append(item)
        elif PATTERN.search(item):
            paths += _matches(item, flag)
        else:
            paths.append(readers.resolve_path(item, flag))
    if not paths:
        raise UserError(f"{flag}={spec} names no file; give files or patterns.")
    return paths


def _matches(pattern, flag):
    import tensorflow as tf

    pattern = pattern if files.is_remote(pattern) else os.path.expanduser(pattern)
    try:
        found = sorted(path for path in tf.io.gfile.glob(pattern) if not files.isdir(path))
    except tf.errors.OpError as error:
        reason = " ".join(str(error.message).split())[:160]
        raise UserError(f"{flag}={pattern} cannot be listed ({reason}); check the scheme, bucket "
                        "and credentials.") from None
    if not found:
        raise UserError(f"{flag}: the pattern {pattern} matches no file; check the path.")
    return found


def _claim_output_dir(output_dir):
    """Checks that --output_dir is new or empty and creates it; returns whether it was new."""
    files.check_writable_dir(output_dir, "--output_dir")
    existed = files.isdir(output_dir)
    if existed:
        present = sorted(files.listdir(output_dir))
        if present:
            raise UserError(f"--output_dir={output_dir} is not empty (it holds {present[0]}"
                            f"{f' and {len(present) - 1} more' if len(present) > 1 else ''}); "
                            "give a new or empty directory.")
    files.makedirs(output_dir)
    return not existed


def _remove_outputs(output_dir, created):
    """Removes what a failed run wrote (the directory was new or empty before it)."""
    if created:
        files.rmtree(output_dir)
        return
    for name in files.listdir(output_dir):
        if prepared.SHARD_NAME.match(name) or name.startswith(f".{prepared.MANIFEST}."):
            files.remove(prepared.join(output_dir, name))


def split_argv(argv):
    """(tfimitate's arguments, Beam's): an argument naming no tfimitate flag goes to Beam,
    with the next one when it is the value (`--project P`).

    Example:
        split_argv(["prepare", "--output_dir=d", "--project", "p"])  # (["prepare", "--output_dir=d"], ["--project", "p"])
    """
    known = set(absl_flags.FLAGS) | {"flagfile", "help", "helpfull", "helpshort", "undefok"}
    ours, beam_args = argv[:1], []
    i = 1
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name and name not in known and not (name.startswith("no") and name[2:] in known):
            beam_args.append(arg)
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                beam_args.append(argv[i + 1])
                i += 1
        else:
            ours.append(arg)
        i += 1
    return ours, beam_args


if __name__ == "__main__":
    ours, beam_args = split_argv(sys.argv)
    run_cli(functools.partial(main, beam_args=beam_args), ours)
