"""Label efficiency: accuracy against labels per class, plain fine-tuning vs few-shot
(--few_shot_pairs), and a domain-shift table (source-only, +self-training, +adaptive
pretraining, both, target-supervised).

Labels-per-class table: for each K in --shots and each seed in --seeds, K examples per class
are drawn (seeded) from SST-2 train (`all`: the whole file); plain fine-tuning and few-shot
training then train on the same file for the same steps (few-shot: --pairs_per_example x
examples pairs, one pass of batch --batch_size, then the head for as many steps again;
plain: --learning_rate 5e-5, the same total steps) and are scored on the first --eval_limit
sentences of SST-2 dev. Reported: mean ± sd over the seeds of eval/metrics.json accuracy.

Domain-shift table (only with --target_train, --target_eval and --target_unlabeled: the
repository ships no second labelled sentiment domain): source = SST-2 train (movies),
target = those files (TSV sentence<TAB>label, .txt one text per line). Runs: source-only;
+self-training (teacher: the source-only run, --unlabeled_data: target text); +adaptive
pretraining (--adapt_pretraining_steps on the target text, then source fine-tuning); both
(self-training from the adapted run, --init_from); target-supervised (the upper bound).
Reported: target eval accuracy and the share of the source-to-target gap each recovers.

Run from the repository root (every run is `python -m tfimitate.train ...`, printed):
    python benchmarks/label_efficiency.py --shots=8,16,32,64,all --seeds=1,2,3
    python benchmarks/label_efficiency.py --shots=8 --seeds=1 --eval_limit=300   # small
"""

import csv
import json
import math
import os
import random
import statistics
import sys

if not __package__:  # run as `python benchmarks/label_efficiency.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

SST2 = os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))

_SST2 = flags.DEFINE_string("sst2_dir", SST2, "Folder of SST-2's train.tsv and dev.tsv.")
_SHOTS = flags.DEFINE_list("shots", ["8", "16", "32", "64", "all"], "Labels per class (or all).")
_SEEDS = flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds (sampling and training).")
_METHODS = flags.DEFINE_list("methods", ["plain", "few_shot"], "Methods of the first table.")
_BACKBONE = flags.DEFINE_string("backbone", "minilm_l6", "--backbone of every run.")
_PAIRS = flags.DEFINE_integer("pairs_per_example", 20, "Few-shot pairs per labelled example.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "--batch_size of every run.")
_ALL_STEPS = flags.DEFINE_integer("all_steps", 600, "Steps of a run on all labels.")
_EVAL_LIMIT = flags.DEFINE_integer("eval_limit", 872, "SST-2 dev sentences scored (872: all).")
_TARGET_TRAIN = flags.DEFINE_string("target_train", None, "Labelled target-domain TSV.")
_TARGET_EVAL = flags.DEFINE_string("target_eval", None, "Labelled target-domain eval TSV.")
_TARGET_UNLABELED = flags.DEFINE_string("target_unlabeled", None, "Target-domain texts (.txt).")
_DOMAIN_STEPS = flags.DEFINE_integer("domain_steps", 400, "Fine-tuning steps of each domain run.")
_ADAPT_STEPS = flags.DEFINE_integer("adapt_steps", 200, "Masked-LM steps of adaptive pretraining.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", os.path.join(harness.ROOT, "runs", "label_efficiency"),
                                "Where the runs and sampled data go.")
_NAME = flags.DEFINE_string("name", "label_efficiency", "Results: benchmarks/results/NAME.{json,md}.")


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(row) == 2]


def write_tsv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\",
                   lineterminator="\n").writerows(rows)
    return path


def sample(rows, shots, seed):
    """`shots` rows per label drawn with `seed` (all rows for "all"), in a seeded order."""
    rng = random.Random(seed)
    if shots == "all":
        return list(rows)
    picked = []
    for label in sorted({label for _, label in rows}):
        picked += rng.sample([row for row in rows if row[1] == label], int(shots))
    rng.shuffle(picked)
    return picked


def common_flags(train, evaluation, model_dir, seed, steps):
    return ["--task=text_classification", f"--backbone={_BACKBONE.value}",
            f"--train_data={train}", f"--eval_data={evaluation}", "--text_column=0",
            "--label_column=1", "--sequence_length=64", f"--batch_size={_BATCH.value}",
            f"--seed={seed}", f"--max_steps={steps}", f"--checkpoint_steps={steps}",
            f"--eval_steps={steps}",  # one evaluation, at the end (an epoch is a step or two)
            f"--model_dir={model_dir}"]


def accuracy(model_dir):
    with open(os.path.join(model_dir, "eval", "metrics.json"), encoding="utf-8") as f:
        return json.load(f)["accuracy"]


def trained(flags_, model_dir, runs):
    """Trains (unless `model_dir` already holds its metrics) and returns its eval accuracy."""
    if not os.path.isfile(os.path.join(model_dir, "eval", "metrics.json")):
        run = harness.train(flags_, log=model_dir + ".log")
        runs.append({"command": run["command"], "wall_seconds": run["wall_seconds"],
                     "load_before": run["machine_before"]["load_average"],
                     "load_after": run["machine_after"]["load_average"]})
        print(f"{run['command']}\n  -> {accuracy(model_dir):.4f} in {run['wall_seconds']} s",
              flush=True)
    return accuracy(model_dir)


def label_table(runs):
    """{shots: {method: [accuracy per seed]}}."""
    data_dir = os.path.join(_RUNS_DIR.value, "data")
    evaluation = write_tsv(os.path.join(data_dir, "dev.tsv"),
                           read_tsv(os.path.join(_SST2.value, "dev.tsv"))[:_EVAL_LIMIT.value])
    train_rows = read_tsv(os.path.join(_SST2.value, "train.tsv"))
    table = {}
    for shots in _SHOTS.value:
        for seed in map(int, _SEEDS.value):
            rows = sample(train_rows, shots, seed)
            train = write_tsv(os.path.join(data_dir, f"k{shots}_s{seed}.tsv"), rows)
            pairs = _PAIRS.value * len(rows)
            contrastive = math.ceil(pairs / _BATCH.value)
            steps = _ALL_STEPS.value if shots == "all" else 2 * contrastive
            for method in _METHODS.value:
                model_dir = os.path.join(_RUNS_DIR.value, f"k{shots}_s{seed}_{method}")
                # Half the steps tune the embedding (on all labels: fewer pairs than the rule).
                extra = ([f"--few_shot_pairs={min(pairs, _BATCH.value * (steps // 2))}"]
                         if method == "few_shot" else ["--learning_rate=5e-5"])
                table.setdefault(shots, {}).setdefault(method, []).append(
                    trained(common_flags(train, evaluation, model_dir, seed, steps) + extra,
                            model_dir, runs))
    return table


def domain_table(runs):
    """{run name: target accuracy} of the domain-shift runs (seed: the first of --seeds)."""
    seed, steps, adapt = int(_SEEDS.value[0]), _DOMAIN_STEPS.value, _ADAPT_STEPS.value
    source, target = os.path.join(_SST2.value, "train.tsv"), _TARGET_TRAIN.value
    place = lambda name: os.path.join(_RUNS_DIR.value, f"domain_{name}")
    unlabeled = f"--unlabeled_data={_TARGET_UNLABELED.value}"
    plan = [
        ("source-only", common_flags(source, _TARGET_EVAL.value, place("source"), seed, steps)),
        ("+self-training", common_flags(source, _TARGET_EVAL.value, place("self"), seed, steps)
         + ["--self_train", f"--teacher={place('source')}", unlabeled]),
        ("+adaptive pretraining", common_flags(source, _TARGET_EVAL.value, place("dapt"), seed,
                                               adapt + steps)
         + [f"--adapt_pretraining_steps={adapt}", unlabeled, "--adapt_pretraining_text=unlabeled"]),
        ("both", common_flags(source, _TARGET_EVAL.value, place("both"), seed, steps)
         + ["--self_train", f"--teacher={place('dapt')}", f"--init_from={place('dapt')}",
            unlabeled]),
        ("target-supervised", common_flags(target, _TARGET_EVAL.value, place("target"), seed,
                                           steps)),
    ]
    return {name: trained(flags_, _model_dir(flags_), runs) for name, flags_ in plan}


def _model_dir(flags_):
    return next(f.split("=", 1)[1] for f in flags_ if f.startswith("--model_dir="))


def markdown(table, domains, info, before, after, runs):
    lines = ["# Label efficiency: plain fine-tuning vs few-shot (SST-2)", "",
             f"Backbone {_BACKBONE.value}, batch {_BATCH.value}, {_PAIRS.value} pairs per "
             f"example, SST-2 dev (first {_EVAL_LIMIT.value} sentences), seeds "
             f"{', '.join(_SEEDS.value)}; mean ± sd of accuracy.", "",
             "| labels per class | " + " | ".join(_METHODS.value) + " |",
             "|---|" + "---|" * len(_METHODS.value)]
    for shots, methods in table.items():
        cells = []
        for method in _METHODS.value:
            values = methods.get(method, [])
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f} (n={len(values)})"
                         if values else "")
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    if domains:
        low, high = domains["source-only"], domains["target-supervised"]
        lines += ["", "## Domain shift (target eval accuracy)", "",
                  "| run | accuracy | gap recovered |", "|---|---|---|"]
        for name, value in domains.items():
            share = (value - low) / (high - low) if high != low else float("nan")
            lines.append(f"| {name} | {100 * value:.2f} | {100 * share:.0f}% |")
    lines += ["", machine.markdown(info, before, after), "", "Commands:", ""]
    lines += [f"    {run['command']}  # {run['wall_seconds']} s" for run in runs]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    info, before, runs = machine.describe(), machine.load_average(), []
    table = label_table(runs)
    domains = None
    if _TARGET_TRAIN.value and _TARGET_EVAL.value and _TARGET_UNLABELED.value:
        domains = domain_table(runs)
    else:
        print("Domain-shift table skipped: give --target_train, --target_eval and "
              "--target_unlabeled.", flush=True)
    after = machine.load_average()
    results = {"machine": info, "load_before": before, "load_after": after,
               "labels_per_class": table, "domain_shift": domains, "runs": runs}
    harness.save(_NAME.value, results, markdown(table, domains, info, before, after, runs))
    print(markdown(table, domains, info, before, after, runs))


if __name__ == "__main__":
    app.run(main)
