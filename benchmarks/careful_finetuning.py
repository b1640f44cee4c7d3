"""SST-2 with the packaged MiniLM-L6: full fine-tuning vs LoRA vs frozen bottom layers vs
layer-wise learning-rate decay, at the same number of steps.

Each configuration is `python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg
--epochs=E --early_stopping_patience=0` plus its own flags, in its own child process
(niced), one after another. Reported: SST-2 test and dev accuracy, trainable parameters
(the training log's count), median seconds per optimizer step (from the TensorBoard loss
events' wall times, the first step's tracing left out), the CPU model and the load
average. The LoRA run also exports, which merges the adapters and checks the merged
SavedModel against the trained model (parity within 1e-4, op audit).
Results already in the JSON are kept, so an interrupted benchmark continues.

Run (about 4 x 40 minutes at --epochs=1 on 2 shared CPU cores):
    python benchmarks/careful_finetuning.py --epochs=1
"""

import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)

import machine  # noqa: E402

CONFIGS = {
    "full": ("full fine-tuning", []),
    "lora_r8": ("LoRA r=8, alpha 16, query+value, lr 5e-4",
                ["--lora_rank=8", "--lora_alpha=16", "--learning_rate=5e-4"]),
    "frozen_bottom_3": ("embeddings and layers 0-2 frozen", ["--freeze=embeddings,layers:0-2"]),
    "llrd_0.9": ("layer-wise LR decay 0.9", ["--layer_lr_decay=0.9"]),
    # Not run by default: LoRA given the 3 epochs of configs/sst2_minilm.cfg.
    "lora_r8_3_epochs": ("LoRA r=8, alpha 16, query+value, lr 1e-3, 3 epochs",
                         ["--lora_rank=8", "--lora_alpha=16", "--learning_rate=1e-3",
                          "--epochs=3"]),
}
DEFAULT = ("full", "lora_r8", "frozen_bottom_3", "llrd_0.9")
EXPORTS = ("lora_r8", "lora_r8_3_epochs")

_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs of each configuration.")
_MAX_STEPS = flags.DEFINE_integer(
    "max_steps", 0, "If > 0, steps of each configuration instead of --epochs (for timing "
    "the configurations close together in time; --test_data is then left out).")
_CONFIGS = flags.DEFINE_list("configs", list(DEFAULT), "Configurations to run, in order.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", os.path.join(ROOT, "runs", "careful"),
                                "Where the runs' model_dirs go.")
_NAME = flags.DEFINE_string("name", "careful_finetuning", "Results file name (without suffix).")


def step_seconds(model_dir):
    """Median wall seconds between consecutive training-loss events after the first step."""
    import tensorflow as tf

    times = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(value.tag == "loss" for value in event.summary.value):
                times[event.step] = event.wall_time
    steps = sorted(times)
    gaps = [times[b] - times[a] for a, b in zip(steps[1:], steps[2:]) if b == a + 1]
    return statistics.median(gaps) if gaps else None


def run_config(name, epochs, runs_dir, max_steps=0):
    _, extra = CONFIGS[name]
    model_dir = os.path.join(runs_dir, name)
    export = os.path.join(runs_dir, name + "_export") if name in EXPORTS else ""
    command = ["nice", "-n", "10", sys.executable, "-m", "tfimitate.train",
               "--flagfile=configs/sst2_minilm.cfg", f"--epochs={epochs}",
               "--early_stopping_patience=0", f"--model_dir={model_dir}",
               f"--export_dir={export}", *extra]
    if max_steps:
        command += [f"--max_steps={max_steps}", "--test_data=", "--export_dir="]
    before = machine.describe()
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    with open(os.path.join(runs_dir, name + ".log"), "w") as f:
        f.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    counts = re.search(r"Trainable parameters: ([\d,]+) of ([\d,]+)", result.stderr)
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
        dev = json.load(f)
    test = dev
    if not max_steps:
        with open(os.path.join(model_dir, "eval", "test_metrics.json")) as f:
            test = json.load(f)
    shown = " ".join(["python"] + command[4:]).replace(ROOT + os.sep, "")
    return {"config": CONFIGS[name][0], "command": shown,
            "test_accuracy": test["accuracy"], "dev_accuracy": dev["accuracy"],
            "steps": test["step"], "trainable_parameters": int(counts.group(1).replace(",", "")),
            "total_parameters": int(counts.group(2).replace(",", "")),
            "seconds_per_step": step_seconds(model_dir), "wall_seconds": round(wall),
            "machine_before": before, "machine_after": machine.describe(),
            "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}


def write_markdown(results, path):
    lines = ["| configuration | steps | SST-2 test acc. | dev acc. | trainable parameters | s/step | "
             "load (1 min) before/after |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        share = 100.0 * r["trainable_parameters"] / r["total_parameters"]
        lines.append(
            f"| {r['config']} | {r['steps']} | {100 * r['test_accuracy']:.1f}% | {100 * r['dev_accuracy']:.1f}% | "
            f"{r['trainable_parameters']:,} ({share:.2f}%) | {r['seconds_per_step']:.2f} | "
            f"{r['machine_before']['load_average'][0]} / {r['machine_after']['load_average'][0]} |")
    any_result = next(iter(results.values()))
    lines += ["", f"CPU: {any_result['machine_before']['cpu_model']}, "
              f"{any_result['machine_before']['cores']} cores, shared with other jobs. "
              "Commands (from the repository root):", ""]
    lines += [f"    {r['command']}" for r in results.values()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    del argv
    os.makedirs(os.path.join(_RUNS_DIR.value, _NAME.value), exist_ok=True)
    path = os.path.join(RESULTS, _NAME.value + ".json")
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            results = json.load(f)
    for name in _CONFIGS.value:
        if name in results:
            continue
        results[name] = run_config(name, _EPOCHS.value, os.path.join(_RUNS_DIR.value, _NAME.value),
                                   _MAX_STEPS.value)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        write_markdown(results, os.path.join(RESULTS, _NAME.value + ".md"))
        print(name, results[name], flush=True)


if __name__ == "__main__":
    app.run(main)
