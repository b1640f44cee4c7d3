"""Films' IMDB ratings from their titles, with and without the catalogue's side columns:
whether --numeric_columns/--categorical_columns help where the columns carry signal.

The data is vega-datasets' movies.json (3,201 US releases of 1928-2010 with box office,
ratings and catalogue fields; BSD-3-Clause), fetched with `npm pack vega-datasets@2.8.0`
(the tarball's sha256 is checked). `build` keeps the films with a title and an IMDB
rating, writes them as CSVs with snake_case columns (`title`, the target `imdb_rating`,
the numbers and categories below; a null becomes an empty cell, which the side features'
missing-value rule handles) and splits them with a seeded permutation into
train/dev/test (70/10/20).

Runs, each `python -m tfimitate.train --task=text_regression` with the same flags, steps
and seed (FLAGS and the --variant's: `plain` fine-tunes everything at 1.5e-4 from the
start, `head_first` trains the head alone on the frozen backbone at 3e-3 for half the
steps first), differing only in side columns:
- `title`: the title only;
- `catalogue`: + what a distributor or a catalogue has before anyone rates the film
  (budget, running time, release year, US and worldwide gross; MPAA rating, genre,
  creative type, source, distributor);
- `critics`: + the Rotten Tomatoes critics' rating (another site's score, not derived from
  the IMDB rating, but an opinion of the same film).
Left out: `IMDB Votes` (read off the same IMDB page as the target), `US DVD Sales` (82%
missing), `Director` (551 names, 42% missing: mostly one-film directors).
Reported: test Pearson, Spearman, RMSE, MAE and R² from eval/test_metrics.json; for the
last run with side columns, the export's parity on every test row (many with missing
values): served `serving_default` scores vs. `tfimitate.predict`'s (the Keras model's).

Run (a few minutes per run on 2 cores), from the repository root:
    python benchmarks/movies.py --build_only --data_dir=data/movies   # the CSVs only
    python benchmarks/movies.py --configs=title,catalogue,critics
    python benchmarks/movies.py --configs=title,catalogue,critics --variant=head_first
"""

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile

if not __package__:  # run as `python benchmarks/movies.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

PACKAGE = "vega-datasets@2.8.0"
TARBALL = "vega-datasets-2.8.0.tgz"
SHA256 = "234330ee2d17a22b71964f428c077b156cee0f16cdd56eab2bd02f5c291c6310"
MEMBER = "package/data/movies.json"
SPLIT_SEED = 28
SHARES = {"train": 0.7, "dev": 0.1}  # the rest is test
TARGET = ("imdb_rating", "IMDB Rating")
# CSV column -> movies.json field (year: the last four characters of "Release Date").
NUMERIC = {"budget": "Production Budget", "running_time": "Running Time min",
           "year": "Release Date", "us_gross": "US Gross", "worldwide_gross": "Worldwide Gross",
           "rotten_tomatoes": "Rotten Tomatoes Rating"}
CATEGORICAL = {"mpaa_rating": "MPAA Rating", "genre": "Major Genre",
               "creative_type": "Creative Type", "source": "Source", "distributor": "Distributor"}
COLUMNS = ("title", TARGET[0], *NUMERIC, *CATEGORICAL)
CATALOGUE_NUMERIC = "budget,running_time,year,us_gross,worldwide_gross"
CATALOGUE_CATEGORICAL = ",".join(CATEGORICAL)
CONFIGS = {
    "title": ("title only", []),
    "catalogue": ("title + catalogue columns",
                  [f"--numeric_columns={CATALOGUE_NUMERIC}",
                   f"--categorical_columns={CATALOGUE_CATEGORICAL}"]),
    "critics": ("title + catalogue + Rotten Tomatoes rating",
                [f"--numeric_columns={CATALOGUE_NUMERIC},rotten_tomatoes",
                 f"--categorical_columns={CATALOGUE_CATEGORICAL}"]),
}
# Every run's flags beyond data, columns, directories and the variant's.
FLAGS = ["--task=text_regression", "--text_column=title", f"--label_column={TARGET[0]}",
         "--normalize_targets", "--sequence_length=32", "--batch_size=32", "--max_steps=400",
         "--warmup_ratio=0.1", "--checkpoint_steps=100", "--seed=42"]
# How the runs of a variant train (the same for its three configurations): `plain`
# fine-tunes everything at one rate from the start; `head_first` first trains the head
# (where the side features join) alone on the frozen backbone at a head's rate, then
# fine-tunes everything (techniques/transfer.py).
VARIANTS = {
    "plain": ("", ["--learning_rate=1.5e-4"]),
    "head_first": (", head first", ["--freeze_backbone_steps=200", "--learning_rate=3e-3",
                                    "--fine_tune_learning_rate=1.5e-4"]),
}
METRICS = ("pearson", "spearman", "rmse", "mae", "r2")

# The benchmark's own flags, parsed only when it runs: importing it (as its tests do) must
# not define flags in absl's global FLAGS, where tfimitate.flags defines --batch_size too.
_FLAGS = flags.FlagValues()


def _flag(kind, *args, **kwargs):
    return getattr(flags, f"DEFINE_{kind}")(*args, flag_values=_FLAGS, **kwargs)


_DATA_DIR = _flag("string", "data_dir", os.path.join(harness.ROOT, "data", "movies"),
                  "Where the tarball and the CSVs go.")
_BUILD_ONLY = _flag("bool", "build_only", False, "Write the CSVs and stop.")
_CONFIGS = _flag("list", "configs", list(CONFIGS), f"Runs, in order: {', '.join(CONFIGS)}.")
_RUNS_DIR = _flag("string", "runs_dir", os.path.join(harness.ROOT, "runs", "movies"),
                  "Where the runs and their exports go.")
_VARIANT = _flag("enum", "variant", "plain", list(VARIANTS), "How the runs train (VARIANTS).")
_RESULTS = _flag("string", "results", "movies", "Name of the results in benchmarks/results/.")
_EXTRA = _flag("list", "extra_flags", [], "More training flags for every run.")


def fetch(data_dir):
    """movies.json of the pinned npm tarball (downloaded into `data_dir` by `npm pack` once,
    its sha256 checked), extracted to <data_dir>/movies.json; returns that path."""
    os.makedirs(data_dir, exist_ok=True)
    tarball = os.path.join(data_dir, TARBALL)
    if not os.path.isfile(tarball):
        subprocess.run(["npm", "pack", PACKAGE, f"--pack-destination={data_dir}",
                        "--loglevel=error"], check=True, stdout=subprocess.DEVNULL)
    with open(tarball, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{tarball}: sha256 {digest}, expected {SHA256}; delete it and rerun.")
    path = os.path.join(data_dir, "movies.json")
    with tarfile.open(tarball) as archive:
        data = archive.extractfile(MEMBER).read()
    with open(path, "wb") as f:
        f.write(data)
    return path


def row(film):
    """One film as a CSV row (COLUMNS order; "" for a null), or None without a title or an
    IMDB rating."""
    title = "" if film.get("Title") is None else str(film["Title"]).strip()  # e.g. 1776, 300
    if not title or film.get(TARGET[1]) is None:
        return None
    cells = [title, film[TARGET[1]]]
    for column, field in NUMERIC.items():
        value = film.get(field)
        cells.append(value[-4:] if column == "year" and value else value)
    cells += [film.get(field) for field in CATEGORICAL.values()]
    return ["" if cell is None else cell for cell in cells]


def build(movies_json, data_dir, seed=SPLIT_SEED):
    """Writes <data_dir>/{train,dev,test}.csv from `movies_json`; returns {split: rows}."""
    with open(movies_json, encoding="utf-8") as f:
        rows = [r for r in map(row, json.load(f)) if r is not None]
    order = np.random.default_rng(seed).permutation(len(rows))
    ends = np.cumsum([round(share * len(rows)) for share in SHARES.values()])
    counts = {}
    for split, part in zip(("train", "dev", "test"), np.split(order, ends)):
        with open(os.path.join(data_dir, f"{split}.csv"), "w", encoding="utf-8",
                  newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(rows[i] for i in sorted(part))
        counts[split] = len(part)
    return counts


def served_parity(export_dir, test_csv, predictions):
    """Max abs difference between the export's serving_default scores on every raw test
    row (NaN / "" for missing cells) and the run's `predictions` (score per row, in order),
    and how many rows had a missing side value."""
    import tensorflow as tf

    from tfimitate.serving import export, saved_models

    model = saved_models.load(os.path.join(export_dir, str(max(export.existing_versions(
        export_dir)))), "--export_dir")
    serve = model.signatures["serving_default"]
    with open(test_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    inputs = {"text": tf.constant([r["title"] for r in rows])}
    for name, spec in serve.structured_input_signature[1].items():
        if name == "text":
            continue
        cells = [r[name] for r in rows]
        inputs[name] = (tf.constant(cells) if spec.dtype == tf.string else
                        tf.constant([float(c) if c else np.nan for c in cells], tf.float32))
    scores = serve(**inputs)["score"].numpy()
    missing = sum(any(r[name] == "" for name in inputs if name != "text") for r in rows)
    return float(np.max(np.abs(scores - np.asarray(predictions)))), missing


def encoded(rows, train, numeric, categorical):
    """The side columns of CSV `rows` encoded as tfimitate encodes them (side_features.py:
    numeric standardised by `train`'s present values, 0 plus a missing indicator when
    missing; categorical one-hot over `train`'s values, an out-of-vocabulary slot and a
    missing indicator), with a constant column: float64 [rows, features]."""
    columns = [np.ones(len(rows))]
    for name in numeric:
        values = np.array([float(r[name]) if r[name] else np.nan for r in rows])
        known = np.array([float(r[name]) for r in train if r[name]])
        missing = np.isnan(values)
        columns += [np.where(missing, 0.0, (values - known.mean()) / known.std()), missing]
    for name in categorical:
        vocabulary = sorted({r[name] for r in train if r[name]})
        columns += [np.array([r[name] == v for r in rows]) for v in vocabulary]
        columns += [np.array([r[name] not in vocabulary and r[name] != "" for r in rows]),
                    np.array([r[name] == "" for r in rows])]
    return np.stack(columns, axis=1).astype(np.float64)


def side_only(data_dir, numeric, categorical, ridge=1.0):
    """Test metrics of a least-squares fit (with a small ridge) of the rating on the encoded
    side columns alone, fitted on train: what the columns carry without the title."""
    read = lambda split: list(csv.DictReader(open(os.path.join(data_dir, f"{split}.csv"),
                                                  encoding="utf-8", newline="")))
    train, test = read("train"), read("test")
    target = lambda rows: np.array([float(r[TARGET[0]]) for r in rows])
    x, y = encoded(train, train, numeric, categorical), target(train)
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    predicted, true = encoded(test, train, numeric, categorical) @ weights, target(test)
    rank = lambda v: np.argsort(np.argsort(v))
    error = predicted - true
    return {"pearson": float(np.corrcoef(predicted, true)[0, 1]),
            "spearman": float(np.corrcoef(rank(predicted), rank(true))[0, 1]),
            "rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "r2": float(1 - np.mean(error ** 2) / np.var(true))}


def markdown(results):
    """The table of results.md and a sentence about the machine of each run."""
    lines = ["| run | step | dev Pearson | test Pearson | test Spearman | test RMSE | test MAE | "
             "test R² |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    show = lambda part, key: f"{part[key]:.4f}" if part else "–"
    for one in results.values():
        test = one["test"]
        lines.append(f"| {one['title']} | {one.get('step', '–')} | "
                     f"{show(one.get('dev'), 'pearson')} | {test['pearson']:.4f} | {test['spearman']:.4f} | {test['rmse']:.4f} | "
                     f"{test['mae']:.4f} | {test['r2']:.4f} |")
    lines.append("")
    for name, one in results.items():
        if "command" not in one:
            lines.append(f"- `{name}`: {one['note']}")
            continue
        lines.append(f"- `{name}`: `{one['command']}`; {one['wall_seconds']} s. "
                     + machine.markdown(one["machine"], one["machine"]["load_average"],
                                        one["load_after"]))
        if one.get("parity"):
            parity = one["parity"]
            logged = parity["export_log"].replace(".;", ";").rstrip(".")
            lines.append(f"  Served parity on all {parity['rows']} test rows ({parity['missing']} "
                         f"with a missing side value): max abs diff {parity['max_abs_diff']:.2e}; "
                         f"the export's own check: {logged}.")
    return "\n".join(lines) + "\n"


def keras_scores(model_dir, test_csv):
    """The run's in-memory (Keras, newest checkpoint) scores of every test row, in order:
    `python -m tfimitate.predict` into <model_dir>/eval/test_predictions.jsonl."""
    output = os.path.join(model_dir, "eval", "test_predictions.jsonl")
    subprocess.run([sys.executable, "-m", "tfimitate.predict", f"--model_dir={model_dir}",
                    f"--input={test_csv}", f"--output={output}"], cwd=harness.ROOT, check=True,
                   capture_output=True)
    with open(output, encoding="utf-8") as f:
        return [json.loads(line)["score"] for line in f if line.strip()]


def main(argv):
    del argv
    data_dir = _DATA_DIR.value
    counts = build(fetch(data_dir), data_dir)
    print(f"Wrote {data_dir}/{{train,dev,test}}.csv: {counts}", flush=True)
    if _BUILD_ONLY.value:
        return
    results = harness.load(_RESULTS.value)
    for name, (title, extra) in CONFIGS.items():
        if extra:  # the side columns without the title: a numpy fit, no training
            numeric, categorical = (flag.split("=", 1)[1].split(",") for flag in extra)
            results[f"{name}_alone"] = {
                "title": f"{title[len('title + '):]} alone (numpy least squares)",
                "test": side_only(data_dir, numeric, categorical),
                "note": "the side columns alone, encoded as tfimitate encodes them, fitted by "
                        "least squares (ridge 1.0) on train: not a tfimitate run."}
    harness.save(_RESULTS.value, results, markdown(results))
    for name in _CONFIGS.value:
        title, extra = CONFIGS[name]
        suffix, variant_flags = VARIANTS[_VARIANT.value]
        key = name if _VARIANT.value == "plain" else f"{name}_{_VARIANT.value}"
        model_dir = os.path.join(_RUNS_DIR.value, key)
        export_dir = os.path.join(_RUNS_DIR.value, f"{key}_export")
        run = harness.train([*FLAGS, *variant_flags, f"--model_dir={model_dir}",
                             f"--export_dir={export_dir}",
                             f"--train_data={data_dir}/train.csv",
                             f"--eval_data={data_dir}/dev.csv",
                             f"--test_data={data_dir}/test.csv", *extra, *_EXTRA.value],
                            log=model_dir + ".log")
        read = lambda report: json.load(open(os.path.join(model_dir, "eval", report)))
        dev, test = read("metrics.json"), read("test_metrics.json")
        result = {"title": title + suffix, "command": run["command"],
                  "wall_seconds": run["wall_seconds"], "machine": run["machine_before"],
                  "load_after": run["machine_after"]["load_average"], "step": test["step"],
                  "flags": extra, "dev": {k: dev[k] for k in METRICS},
                  "test": {k: test[k] for k in METRICS}}
        if extra:
            test_csv = f"{data_dir}/test.csv"
            diff, missing = served_parity(export_dir, test_csv, keras_scores(model_dir, test_csv))
            logged = [line.split("] ", 1)[-1].rstrip(".") for line in run["stderr"].splitlines()
                      if "Parity check on" in line]
            result["parity"] = {"rows": counts["test"], "missing": missing,
                                "max_abs_diff": diff, "export_log": "; ".join(logged)}
        print(json.dumps(result, indent=2), flush=True)
        results = harness.load(_RESULTS.value)
        results[key] = result
        harness.save(_RESULTS.value, results, markdown(results))


def _parse(argv):
    """Parses the benchmark's flags, then absl's own (logging) from what is left."""
    return flags.FLAGS(_FLAGS(argv, known_only=True))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
