"""Time per training step of adversarial training on SST-2: none vs FGM vs PGD vs FreeLB.

Each method fine-tunes the packaged MiniLM-L6 with configs/sst2_minilm.cfg for --steps
optimizer steps in its own `python -m tfimitate.train` child, one after the other. The
time per step comes from the TensorBoard wall times of the training loss, leaving out
the first WARMUP_STEPS (tracing); evaluation runs on 64 dev sentences only. The CPU
model and the load average before and after each child go with the figures, since the
machine may be shared.

Run (about 25 minutes on 2 idle CPU cores):
    python benchmarks/adversarial_step_time.py --steps=30
"""

import os
import sys
import tempfile

if not __package__:  # run as `python benchmarks/adversarial_step_time.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

SST2 = os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))
METHODS = {"none": [], "fgm": ["--adversarial=fgm"], "pgd": ["--adversarial=pgd", "--adv_steps=3"],
           "freelb": ["--adversarial=freelb", "--adv_steps=3"]}
WARMUP_STEPS = 3

_STEPS = flags.DEFINE_integer("steps", 30, "Optimizer steps per method.")
_METHODS = flags.DEFINE_list("methods", list(METHODS), "Methods to time.")


def time_method(name, steps, scratch, eval_file):
    model_dir = os.path.join(scratch, name)
    run = harness.train(["--flagfile=configs/sst2_minilm.cfg", f"--train_data={SST2}/train.tsv",
                         f"--eval_data={eval_file}", "--test_data=", "--export_dir=",
                         f"--model_dir={model_dir}", f"--max_steps={steps}", *METHODS[name]],
                        nice=False)
    times = harness.loss_wall_times(model_dir)
    per_step = (times[steps] - times[WARMUP_STEPS]) / (steps - WARMUP_STEPS)
    return {"method": name, "steps": steps, "seconds_per_step": round(per_step, 3),
            "load_before": run["machine_before"]["load_average"][0],
            "load_after": run["machine_after"]["load_average"][0]}


def main(argv):
    del argv
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        eval_file = os.path.join(scratch, "dev64.tsv")
        with open(os.path.join(SST2, "dev.tsv"), encoding="utf-8") as f, open(eval_file, "w") as out:
            out.writelines(f.readlines()[:64])
        for name in _METHODS.value:
            results.append(time_method(name, _STEPS.value, scratch, eval_file))
            print(results[-1], flush=True)
    base = next((r["seconds_per_step"] for r in results if r["method"] == "none"), None)
    fgm = next((r["seconds_per_step"] for r in results if r["method"] == "fgm"), None)
    for result in results:
        result["vs_none"] = round(result["seconds_per_step"] / base, 2) if base else None
        result["vs_fgm"] = round(result["seconds_per_step"] / fgm, 2) if fgm else None
    report = {"machine": machine.describe(), "batch_size": 32, "results": results}
    lines = ["| method | s/step | vs none | vs FGM | load before / after |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['seconds_per_step']:.2f} | {r['vs_none']}x | {r['vs_fgm']}x | "
              f"{r['load_before']} / {r['load_after']} |" for r in results]
    text = (f"# Adversarial training: time per step (SST-2, MiniLM-L6, batch 32)\n\n"
            f"{report['machine']['cpu_model']}, {report['machine']['cores']} cores. Command: "
            f"`python benchmarks/adversarial_step_time.py --steps={_STEPS.value}`\n\n"
            + "\n".join(lines) + "\n")
    harness.save("adversarial_step_time", report, text)
    print(text)


if __name__ == "__main__":
    app.run(main)
