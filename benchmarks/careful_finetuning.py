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

import json
import os
import re
import statistics
import sys

if not __package__:  # run as `python benchmarks/careful_finetuning.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness  # noqa: E402

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
_RUNS_DIR = flags.DEFINE_string("runs_dir", os.path.join(harness.ROOT, "runs", "careful"),
                                "Where the runs' model_dirs go.")
_NAME = flags.DEFINE_string("name", "careful_finetuning", "Results file name (without suffix).")


def step_seconds(model_dir):
    """Median wall seconds between consecutive training-loss events after the first step."""
    times = harness.loss_wall_times(model_dir)
    steps = sorted(times)
    gaps = [times[b] - times[a] for a, b in zip(steps[1:], steps[2:]) if b == a + 1]
    return statistics.median(gaps) if gaps else None


def read_metrics(model_dir, name):
    with open(os.path.join(model_dir, "eval", name)) as f:
        return json.load(f)


def run_config(name, epochs, runs_dir, max_steps=0):
    _, extra = CONFIGS[name]
    model_dir = os.path.join(runs_dir, name)
    export = os.path.join(runs_dir, name + "_export") if name in EXPORTS else ""
    args = ["--flagfile=configs/sst2_minilm.cfg", f"--epochs={epochs}",
            "--early_stopping_patience=0", f"--model_dir={model_dir}", f"--export_dir={export}",
            *extra]
    if max_steps:
        args += [f"--max_steps={max_steps}", "--test_data=", "--export_dir="]
    run = harness.train(args, log=os.path.join(runs_dir, name + ".log"))
    counts = re.search(r"Trainable parameters: ([\d,]+) of ([\d,]+)", run["stderr"])
    dev = read_metrics(model_dir, "metrics.json")
    test = dev if max_steps else read_metrics(model_dir, "test_metrics.json")
    return {"config": CONFIGS[name][0], "command": run["command"],
            "test_accuracy": test["accuracy"], "dev_accuracy": dev["accuracy"],
            "steps": test["step"], "trainable_parameters": int(counts.group(1).replace(",", "")),
            "total_parameters": int(counts.group(2).replace(",", "")),
            "seconds_per_step": step_seconds(model_dir), "wall_seconds": run["wall_seconds"],
            "machine_before": run["machine_before"], "machine_after": run["machine_after"],
            "load_average_1_5_15_after": run["machine_after"]["load_average"]}


def markdown(results):
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
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    os.makedirs(os.path.join(_RUNS_DIR.value, _NAME.value), exist_ok=True)
    results = harness.load(_NAME.value)
    for name in _CONFIGS.value:
        if name in results:
            continue
        results[name] = run_config(name, _EPOCHS.value, os.path.join(_RUNS_DIR.value, _NAME.value),
                                   _MAX_STEPS.value)
        harness.save(_NAME.value, results, markdown(results))
        print(name, results[name], flush=True)


if __name__ == "__main__":
    app.run(main)
