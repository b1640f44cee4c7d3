"""What the benchmarks share: train in a child process, read its step times, save results.

Every benchmark imports `from benchmarks import ...` and runs from the repository root,
as a module or as a script (a script first puts the repository root in place of its own
folder on sys.path, so this checkout's tfimitate is the one imported):
    python -m benchmarks.forgetting --max_steps=100
    python benchmarks/forgetting.py --max_steps=100

Example:
    run = harness.train([f"--model_dir={model_dir}", "--max_steps=30"], log=model_dir + ".log")
    run["command"]                       # "python -m tfimitate.train --model_dir=... ..."
    times = harness.loss_wall_times(model_dir)       # {step: wall time of its loss event}
    harness.save("forgetting", results, markdown)    # benchmarks/results/forgetting.{json,md}
"""

import glob
import json
import os
import subprocess
import sys
import time

from benchmarks import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def train(flags, log=None, nice=True):
    """Runs `python -m tfimitate.train FLAGS` from the repository root (under `nice -n 10`
    unless `nice` is False), writing its stderr to `log` if given. Returns {"command": as
    a reader types it, "stderr", "wall_seconds", "machine_before", "machine_after"}; a
    failed child stops the benchmark with the end of its stderr."""
    command = [sys.executable, "-m", "tfimitate.train", *flags]
    before = machine.describe()
    start = time.time()
    result = subprocess.run((["nice", "-n", "10"] if nice else []) + command, cwd=ROOT,
                            capture_output=True, text=True)
    wall = time.time() - start
    if log:
        with open(log, "w") as f:
            f.write(result.stderr)
    shown = " ".join(["python"] + command[1:]).replace(ROOT + os.sep, "")
    if result.returncode != 0:
        raise SystemExit(f"{shown} failed:\n{result.stderr[-3000:]}")
    return {"command": shown, "stderr": result.stderr, "wall_seconds": round(wall),
            "machine_before": before, "machine_after": machine.describe()}


def loss_wall_times(model_dir):
    """{step: wall time} of the training loss events a run logged to TensorBoard."""
    import tensorflow as tf

    times = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(value.tag == "loss" for value in event.summary.value):
                times[event.step] = event.wall_time
    return times


def load(name, directory=RESULTS):
    """The results saved as <directory>/<name>.json, or {} (so a benchmark can continue)."""
    path = os.path.join(directory, name + ".json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save(name, data, markdown, directory=RESULTS):
    """Writes `data` to <directory>/<name>.json and the `markdown` text to <name>.md, each
    whole or not at all (written beside, then renamed)."""
    os.makedirs(directory, exist_ok=True)
    for suffix, text in ((".json", json.dumps(data, indent=2, ensure_ascii=False) + "\n"),
                         (".md", markdown)):
        path = os.path.join(directory, name + suffix)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
