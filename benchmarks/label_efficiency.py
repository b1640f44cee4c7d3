"""Label efficiency: accuracy against labels per class, plain fine-tuning vs few-shot
(--few_shot_pairs), and a domain-shift table (source-only, +self-training, +adaptive
pretraining, both, target-supervised).

Labels-per-class table: for each K in --shots and each seed in --seeds, K examples per class
are drawn (seeded) from SST-2 train (`all`: the whole file); plain fine-tuning and few-shot
training then train on the same file for the same steps (few-shot: --pairs_per_example x
examples pairs, SetFit's 40 by default, one pass of batch --batch_size, then the head for as
many steps again; plain: --learning_rate 5e-5, the same total steps) and are scored on the
first --eval_limit sentences of SST-2 dev (--eval_on=heldout: the last --eval_limit of SST-2
train less the sampled ones, to compare methods without looking at dev). Reported: mean ± sd
over the seeds of eval/metrics.json accuracy. Every other setting is the library's default.

Domain-shift table: source = SST-2 train (movies), target = Amazon product-review sentences
(--target_domain=amazon, or tweets) built offline from the vaderSentiment sdist
(sentiment_domains.py: whole reviews held out as the labelled test, the rest used as
unlabelled text, and labelled only for the upper bound), or your own --target_train,
--target_eval and --target_unlabeled files. Runs (seed: the first of --seeds): source-only;
+self-training (teacher: the source-only run, --unlabeled_data: target text); +adaptive
pretraining (--adapt_pretraining_steps on the target text, then source fine-tuning); both
(self-training from the adapted run, --init_from); target-supervised (the upper bound).
Reported: target test accuracy and the share of the source-to-target gap each recovers.

Each finished run is kept (its eval/metrics.json, and <model_dir>.run.json with its command),
so a re-run continues; benchmarks/results/NAME.{json,md} are rewritten after every run.
Run from the repository root (every run is `python -m tfimitate.train ...`, printed):
    python benchmarks/label_efficiency.py --shots=8,16,32,64,all --seeds=1,2,3
    python benchmarks/label_efficiency.py --tables=domain --name=label_efficiency_domain
    python benchmarks/label_efficiency.py --shots=8 --seeds=1 --eval_limit=300 --tables=labels
"""

import json
import math
import os
import random
import statistics
import sys

if not __package__:  # run as `python benchmarks/label_efficiency.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine, sentiment_domains  # noqa: E402

# shared/ beside the repository (a clone) or one level up (a worktree).
SST2_PLACES = [os.path.normpath(os.path.join(harness.ROOT, up, "shared", "data", "sst2"))
               for up in ("..", os.path.join("..", ".."))]
SST2 = next((p for p in SST2_PLACES if os.path.isdir(p)), SST2_PLACES[0])

# The benchmark's own flags, parsed only when it runs: importing it (as its test does) must
# not define flags in absl's global FLAGS, where tfimitate.flags defines --batch_size too.
_FLAGS = flags.FlagValues()


def _flag(kind, *args, **kwargs):
    return getattr(flags, f"DEFINE_{kind}")(*args, flag_values=_FLAGS, **kwargs)


_SST2 = _flag("string", "sst2_dir", SST2, "Folder of SST-2's train.tsv and dev.tsv.")
_TABLES = _flag("list", "tables", ["labels", "domain"],
                "Tables to measure, in this order: labels, domain.")
flags.register_validator("tables", lambda names: set(names) <= {"labels", "domain"},
                         "--tables: give labels and/or domain.", flag_values=_FLAGS)
_SHOTS = _flag("list", "shots", ["8", "16", "32", "64", "all"], "Labels per class (or all).")
_SEEDS = _flag("list", "seeds", ["1", "2", "3"], "Seeds (sampling and training).")
_METHODS = _flag("list", "methods", ["plain", "few_shot"], "Methods of the first table.")
_BACKBONE = _flag("string", "backbone", "minilm_l6", "--backbone of every run.")
_PAIRS = _flag("integer", "pairs_per_example", 40,
               "Few-shot pairs per labelled example (SetFit: 20 iterations of 2 pairs).")
_BATCH = _flag("integer", "batch_size", 16, "--batch_size of every run.")
_ALL_STEPS = _flag("integer", "all_steps", 600, "Steps of a run on all labels.")
_EVAL_LIMIT = _flag("integer", "eval_limit", 872, "SST-2 dev sentences scored (872: all).")
_EVAL_ON = _flag("enum", "eval_on", "dev", ["dev", "heldout"],
                 "Labels table scored on SST-2 dev, or (to choose a method without looking at "
                 "dev) on held-out train: the last --eval_limit rows of train.tsv less the "
                 "sampled ones.")
_DOMAIN = _flag("enum", "target_domain", "amazon", list(sentiment_domains.DOMAINS),
                "Target domain built from the vaderSentiment sdist (unless --target_train).")
_TEST_SIZE = _flag("integer", "target_test_size", 500, "Labelled target test sentences.")
_TARGET_TRAIN = _flag("string", "target_train", None, "Own labelled target-domain TSV.")
_TARGET_EVAL = _flag("string", "target_eval", None, "Own labelled target-domain test TSV.")
_TARGET_UNLABELED = _flag("string", "target_unlabeled", None, "Own target-domain texts (.txt).")
_DOMAIN_STEPS = _flag("integer", "domain_steps", 400, "Fine-tuning steps of each domain run.")
_ADAPT_STEPS = _flag("integer", "adapt_steps", 200, "Masked-LM steps of adaptive pretraining.")
_RUNS_DIR = _flag("string", "runs_dir", os.path.join(harness.ROOT, "runs", "label_efficiency"),
                  "Where the runs and data go.")
_NAME = _flag("string", "name", "label_efficiency",
              "Results: benchmarks/results/NAME.{json,md}.")
_REPORT_ONLY = _flag("boolean", "report_only", False,
                     "Train nothing: rewrite the results from the finished runs only.")


def read_tsv(path):
    """[text, label] rows of a sentence<TAB>label file."""
    with open(path, encoding="utf-8") as f:
        return [row for row in (line.rstrip("\n").split("\t") for line in f) if len(row) == 2]


def write_tsv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{text}\t{label}\n" for text, label in rows)
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


def heldout(rows, picked, limit):
    """The last `limit` of `rows` less the `picked` ones (texts the run does not train on).

    Example:
        heldout([["a", "0"], ["b", "1"], ["c", "1"]], [["c", "1"]], 2)   # [["b", "1"]]
    """
    picked = set(map(tuple, picked))
    return [row for row in rows[-limit:] if tuple(row) not in picked]


def few_shot_plan(examples, shots, pairs_per_example, batch_size, all_steps):
    """(steps of both methods, few-shot pairs) for `examples` labelled rows: twice one pass
    over the pairs (all labels: `all_steps`, half of them tuning the embedding).

    Example:
        few_shot_plan(16, "8", 40, 16, 600)   # (80, 640)
    """
    pairs = pairs_per_example * examples
    if shots == "all":
        return all_steps, min(pairs, batch_size * (all_steps // 2))
    return 2 * math.ceil(pairs / batch_size), pairs


def common_flags(train, evaluation, model_dir, seed, steps):
    return ["--task=text_classification", f"--backbone={_BACKBONE.value}",
            f"--train_data={train}", f"--eval_data={evaluation}", "--text_column=0",
            "--label_column=1", "--sequence_length=64", f"--batch_size={_BATCH.value}",
            f"--seed={seed}", f"--max_steps={steps}", f"--checkpoint_steps={steps}",
            f"--eval_steps={steps}",  # one evaluation, at the end (an epoch is a step or two)
            f"--model_dir={model_dir}"]


def gap_share(value, low, high):
    """The share of the gap from `low` (source-only) to `high` (target-supervised) that
    `value` recovers (nan without a gap).

    Example:
        gap_share(0.86, 0.80, 0.90)   # 0.6
    """
    return (value - low) / (high - low) if high != low else float("nan")


class Bench:
    """The runs and tables so far; the results files are rewritten after every run."""

    def __init__(self):
        self.info, self.before = machine.describe(), machine.load_average()
        self.labels, self.domains, self.target, self.runs = {}, {}, None, []

    def trained(self, flags_):
        """Trains (unless its model_dir already holds its metrics) and returns its accuracy
        (None for an unfinished run under --report_only)."""
        model_dir = next(f.split("=", 1)[1] for f in flags_ if f.startswith("--model_dir="))
        metrics, record = (os.path.join(model_dir, "eval", "metrics.json"),
                           model_dir + ".run.json")
        if not os.path.isfile(metrics):
            if _REPORT_ONLY.value:
                return None
            run = harness.train(flags_, log=model_dir + ".log")
            with open(record, "w", encoding="utf-8") as f:
                json.dump({"command": run["command"], "wall_seconds": run["wall_seconds"],
                           "load_before": run["machine_before"]["load_average"],
                           "load_after": run["machine_after"]["load_average"]}, f)
        with open(metrics, encoding="utf-8") as f:
            accuracy = json.load(f)["accuracy"]
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                self.runs.append(dict(json.load(f), accuracy=accuracy))
            print(f"{self.runs[-1]['command']}\n  -> {accuracy:.4f} in "
                  f"{self.runs[-1]['wall_seconds']} s", flush=True)
        return accuracy

    def label_table(self):
        """self.labels: {shots: {method: [accuracy per seed]}}."""
        data_dir, limit = os.path.join(_RUNS_DIR.value, "data"), _EVAL_LIMIT.value
        evaluation = write_tsv(os.path.join(data_dir, f"dev{limit}.tsv"),
                               read_tsv(os.path.join(_SST2.value, "dev.tsv"))[:limit])
        train_rows = read_tsv(os.path.join(_SST2.value, "train.tsv"))
        for shots in _SHOTS.value:
            for seed in map(int, _SEEDS.value):
                rows = sample(train_rows, shots, seed)
                train = write_tsv(os.path.join(data_dir, f"k{shots}_s{seed}.tsv"), rows)
                if _EVAL_ON.value == "heldout":
                    name = f"heldout{limit}_k{shots}_s{seed}.tsv"
                    evaluation = write_tsv(os.path.join(data_dir, name),
                                           heldout(train_rows, rows, limit))
                steps, pairs = few_shot_plan(len(rows), shots, _PAIRS.value, _BATCH.value,
                                             _ALL_STEPS.value)
                for method in _METHODS.value:
                    model_dir = os.path.join(
                        _RUNS_DIR.value, f"k{shots}_s{seed}_{method}_"
                        + ("h" if _EVAL_ON.value == "heldout" else "e") + str(limit)
                        + (f"_p{_PAIRS.value}" if shots != "all" else ""))
                    extra = ([f"--few_shot_pairs={pairs}"] if method == "few_shot"
                             else ["--learning_rate=5e-5"])
                    value = self.trained(common_flags(train, evaluation, model_dir, seed, steps)
                                         + extra)
                    if value is None:
                        continue
                    self.labels.setdefault(shots, {}).setdefault(method, []).append(value)
                    self.save()

    def target_files(self):
        if _TARGET_TRAIN.value or _TARGET_EVAL.value or _TARGET_UNLABELED.value:
            if not (_TARGET_TRAIN.value and _TARGET_EVAL.value and _TARGET_UNLABELED.value):
                raise SystemExit("Give all of --target_train, --target_eval and "
                                 "--target_unlabeled, or none (--target_domain then).")
            return {"name": "own files", "train": _TARGET_TRAIN.value,
                    "test": _TARGET_EVAL.value, "unlabeled": _TARGET_UNLABELED.value}
        built = sentiment_domains.build(_DOMAIN.value, os.path.join(_RUNS_DIR.value, "data"),
                                        _TEST_SIZE.value)
        return dict(built, name=_DOMAIN.value)

    def domain_table(self):
        """self.domains: {run name: target test accuracy} (seed: the first of --seeds)."""
        self.target = target = self.target_files()
        seed, steps, adapt = int(_SEEDS.value[0]), _DOMAIN_STEPS.value, _ADAPT_STEPS.value
        source, test = os.path.join(_SST2.value, "train.tsv"), target["test"]
        place = lambda name: os.path.join(_RUNS_DIR.value,  # noqa: E731
                                          f"domain_{target['name'].replace(' ', '_')}_{name}")
        unlabeled = f"--unlabeled_data={target['unlabeled']}"
        plan = [
            ("source-only", common_flags(source, test, place("source"), seed, steps)),
            ("+self-training", common_flags(source, test, place("self"), seed, steps)
             + ["--self_train", f"--teacher={place('source')}", unlabeled]),
            ("+adaptive pretraining", common_flags(source, test, place("dapt"), seed,
                                                   adapt + steps)
             + [f"--adapt_pretraining_steps={adapt}", unlabeled,
                "--adapt_pretraining_text=unlabeled"]),
            ("both", common_flags(source, test, place("both"), seed, steps)
             + ["--self_train", f"--teacher={place('dapt')}", f"--init_from={place('dapt')}",
                unlabeled]),
            ("target-supervised", common_flags(target["train"], test, place("target"), seed,
                                               steps)),
        ]
        for name, flags_ in plan:
            value = self.trained(flags_)
            if value is not None:
                self.domains[name] = value
                self.save()

    def results(self):
        return {"machine": self.info, "load_before": self.before,
                "load_after": machine.load_average(), "labels_per_class": self.labels,
                "target": self.target, "domain_shift": self.domains, "runs": self.runs}

    def save(self):
        results = self.results()
        harness.save(_NAME.value, results, markdown(results))


def _cell(values):
    if not values:
        return ""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    seeds = ", ".join(f"{100 * v:.2f}" for v in values)
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f} ({seeds})"


def _shown(path):
    """`path` relative to the repository root when inside it."""
    relative = os.path.relpath(path, harness.ROOT)
    return path if relative.startswith("..") else relative


def markdown(results):
    """The results as a markdown page: both tables, the machine and every command."""
    lines = ["# Label efficiency and domain shift (SST-2 source)", ""]
    if results["labels_per_class"]:
        methods = _METHODS.value
        lines += [f"Labels per class: backbone {_BACKBONE.value}, batch {_BATCH.value}, "
                  f"{_PAIRS.value} pairs per example (few-shot), "
                  + (f"held-out SST-2 train (its last {_EVAL_LIMIT.value} sentences less the "
                     "sampled ones)" if _EVAL_ON.value == "heldout" else
                     f"SST-2 dev (first {_EVAL_LIMIT.value} sentences)")
                  + "; accuracy %, mean ± sd over seeds "
                  f"{', '.join(_SEEDS.value)} (each seed's in brackets).", "",
                  "| labels per class | " + " | ".join(methods) + " | few-shot - plain |",
                  "|---|" + "---|" * (len(methods) + 1)]
        for shots, by_method in results["labels_per_class"].items():
            cells = [_cell(by_method.get(method, [])) for method in methods]
            done = [by_method.get(m, []) for m in ("plain", "few_shot")]
            difference = (f"{100 * (statistics.mean(done[1]) - statistics.mean(done[0])):+.2f}"
                          if all(done) and len(done[0]) == len(done[1]) else "")
            lines.append(f"| {shots} | " + " | ".join(cells) + f" | {difference} |")
    domains, target = results["domain_shift"], results["target"]
    if domains:
        counts = target.get("counts")
        lines += ["", f"## Domain shift: SST-2 (movies) -> {target['name']} "
                  "(target test accuracy)", "",
                  f"Target: {_shown(target['train'])} (unlabelled text / target-supervised "
                  f"labels), {_shown(target['test'])} (test)"
                  + (f"; rows {json.dumps(counts)}" if counts else "") + f". Backbone "
                  f"{_BACKBONE.value}, batch {_BATCH.value}, {_DOMAIN_STEPS.value} fine-tuning "
                  f"steps per run (+{_ADAPT_STEPS.value} masked-LM steps with adaptive "
                  f"pretraining), seed {_SEEDS.value[0]}.", "",
                  "| run | accuracy % | gap recovered |", "|---|---|---|"]
        low, high = domains.get("source-only"), domains.get("target-supervised")
        for name, value in domains.items():
            share = (f"{100 * gap_share(value, low, high):.0f}%"
                     if low is not None and high is not None else "")
            lines.append(f"| {name} | {100 * value:.2f} | {share} |")
    lines += ["", machine.markdown(results["machine"], results["load_before"],
                                   results["load_after"])]
    loads = [run[key][0] for run in results["runs"] for key in ("load_before", "load_after")]
    if loads:
        lines[-1] += (f" The runs' 1-minute load at their starts and ends: {min(loads)} to "
                      f"{max(loads)}.")
    lines += ["", "Commands:", ""]
    lines += [f"    {run['command']}  # {run['wall_seconds']} s, load "
              f"{run['load_before'][0]} -> {run['load_after'][0]}" for run in results["runs"]]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    bench = Bench()
    for table in _TABLES.value:  # in the order given
        {"labels": bench.label_table, "domain": bench.domain_table}[table]()
    bench.save()
    print(markdown(bench.results()))


def _parse(argv):
    """Parses the benchmark's flags, then absl's own (logging) from what is left."""
    return flags.FLAGS(_FLAGS(argv, known_only=True))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
