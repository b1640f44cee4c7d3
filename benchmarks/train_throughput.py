"""Fine-tuning speed on SST-2: tfimitate vs plain keras-hub `fit` vs Hugging Face on PyTorch.

Each fine-tunes the packaged MiniLM-L6 (same checkpoint) for the same number of
AdamW steps (lr 5e-5, 10% warmup then linear decay, weight decay 0.01, clip 1.0),
batch 32, at most 128 word pieces, then report dev accuracy:
  * tfimitate (`workflow.train`: length-bucketed batches, cached tokenization, oneDNN on)
    in float32 (`tfimitate`) and with the default `--precision=auto` (`tfimitate_auto`:
    mixed_bfloat16 on a CPU with AMX or AVX512-BF16), then exports and times the
    SavedModel on raw strings;
  * keras-hub `BertTextClassifier.fit` with its preprocessor at sequence_length 128;
  * transformers + PyTorch: a Trainer-equivalent loop with dynamic padding
    (`DataCollatorWithPadding`), then a `pipeline("text-classification")` timing, in float32
    (`hf_torch`) and under bf16 autocast (`hf_torch_bf16`: training, evaluation and pipeline).
Each runs in its own child process. Examples/s count steady-state steps (the first
WARMUP_STEPS, which trace/compile, are left out). Model FLOPs utilisation counts the
useful FLOPs of the real (unpadded) tokens against the machine's own float32 matmul
peak, measured in each child (tf.matmul or torch.matmul, best of 10 at 2048x2048); the
best of those is the peak. The results record the CPU model, its vector extensions
(benchmarks/machine.py) and the load average before and after each child: ratios move
with the CPU class and with other work on the machine.

Benchmark-only extras (never project dependencies):
    pip install torch==2.13.0 transformers==5.25.0
Run (about 10 minutes on 2 CPU cores):
    python benchmarks/train_throughput.py --steps=30
    python benchmarks/train_throughput.py --steps=40 --frameworks=tfimitate,tfimitate_auto,hf_torch,hf_torch_bf16
"""

import json
import os
import subprocess
import sys
import tempfile
import time

if not __package__:  # run as `python benchmarks/train_throughput.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

# ../shared/data/sst2 beside the checkout; a git worktree elsewhere sets TFIMITATE_SST2.
SST2 = os.environ.get("TFIMITATE_SST2") or os.path.normpath(
    os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))
FRAMEWORKS = ("tfimitate", "tfimitate_auto", "keras_hub", "hf_torch", "hf_torch_bf16")
BATCH, MAX_LENGTH, LR, WARMUP_RATIO, WEIGHT_DECAY = 32, 128, 5e-5, 0.1, 0.01
WARMUP_STEPS = 3

_STEPS = flags.DEFINE_integer("steps", 30, "Optimizer steps per framework.")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["tfimitate", "keras_hub", "hf_torch"],
                                "Which of FRAMEWORKS to run, in order.")
_RESULTS_NAME = flags.DEFINE_string("results_name", "train_throughput",
                                    "Results file name under benchmarks/results/ (.json, .md).")
_FRAMEWORK = flags.DEFINE_enum("framework", None, FRAMEWORKS, "Internal: run one framework.")
_RESULT = flags.DEFINE_string("result", None, "Internal: where the child writes its JSON.")


def read_tsv(name):
    """(texts, labels) of an SST-2 split."""
    texts, labels = [], []
    with open(os.path.join(SST2, name), encoding="utf-8") as f:
        for line in f:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            texts.append(text)
            labels.append(int(label))
    return texts, labels


def steady_rate(times, steps):
    """Examples/s between the end of step WARMUP_STEPS and the end of the last step."""
    return (steps - WARMUP_STEPS) * BATCH / (times[steps - 1] - times[WARMUP_STEPS - 1])


def run_tfimitate(steps, scratch, precision="float32"):
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    from tfimitate import workflow
    from tfimitate.config import Experiment

    peak = machine.tf_matmul_peak()
    cfg = Experiment(model_dir=os.path.join(scratch, "run"), export_dir=os.path.join(scratch, "export"),
                     train_data=os.path.join(SST2, "train.tsv"), eval_data=os.path.join(SST2, "dev.tsv"),
                     text_column="0", label_column="1", max_steps=steps, batch_size=BATCH,
                     sequence_length=MAX_LENGTH, learning_rate=LR, precision=precision)
    start = time.time()
    metrics = workflow.train(cfg)
    total = time.time() - start
    times = {}
    for path in tf.io.gfile.glob(os.path.join(cfg.model_dir, "logs", "train", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "loss" for v in event.summary.value):
                times[event.step - 1] = event.wall_time
    served = tf.saved_model.load(os.path.join(cfg.export_dir, "1")).signatures["serving_default"]
    with open(os.path.join(cfg.model_dir, "runtime.json")) as f:
        resolved = json.load(f)["precision"]
    return dict(ex_per_s=steady_rate(times, steps), dev_accuracy=metrics["accuracy"],
                wall_s=total, matmul_peak_flops=peak, precision=resolved,
                inference_ex_per_s=_inference_rate(
                    lambda batch: served(text=tf.constant(batch))))


def run_keras_hub(steps, scratch):
    import tfimitate  # noqa: F401
    import keras
    import keras_hub
    import tensorflow as tf
    from tfimitate.backbones import resolve_backbone
    from tfimitate.training.optim import WarmupLinearDecay

    peak = machine.tf_matmul_peak()
    path = resolve_backbone("minilm_l6")
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        path, sequence_length=MAX_LENGTH)
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        path, num_classes=2, preprocessor=preprocessor)
    optimizer = keras.optimizers.AdamW(
        WarmupLinearDecay(LR, int(steps * WARMUP_RATIO), steps), weight_decay=WEIGHT_DECAY,
        epsilon=1e-6, global_clipnorm=1.0)
    classifier.compile(optimizer=optimizer, metrics=["accuracy"],
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    texts, labels = read_tsv("train.tsv")
    train = tf.data.Dataset.from_tensor_slices((texts, labels)).shuffle(10_000, seed=42).repeat().batch(BATCH)
    times = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: times.append(time.time()))
    start = time.time()
    classifier.fit(train, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=2)
    total = time.time() - start
    dev_texts, dev_labels = read_tsv("dev.tsv")
    _, accuracy = classifier.evaluate(tf.data.Dataset.from_tensor_slices((dev_texts, dev_labels)).batch(BATCH),
                                      verbose=0)
    return dict(ex_per_s=steady_rate(times, steps), dev_accuracy=float(accuracy), wall_s=total,
                matmul_peak_flops=peak)


def run_hf_torch(steps, scratch, bf16=False):
    import contextlib

    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, get_linear_schedule_with_warmup, pipeline)
    from tfimitate.backbones import resolve_backbone

    torch.manual_seed(42)
    peak = machine.torch_matmul_peak()
    path = resolve_backbone("minilm_l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    texts, labels = read_tsv("train.tsv")
    encoded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    examples = [{"input_ids": ids, "attention_mask": mask, "labels": label}
                for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels)]
    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(examples, batch_size=BATCH, shuffle=True, collate_fn=collate)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, int(steps * WARMUP_RATIO), steps)
    model.train()
    autocast = lambda: (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                        else contextlib.nullcontext())
    times, step = [], 0
    start = time.time()
    while step < steps:
        for batch in loader:
            with autocast():
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            times.append(time.time())
            step += 1
            if step == steps:
                break
    total = time.time() - start
    model.eval()
    dev_texts, dev_labels = read_tsv("dev.tsv")
    correct = 0
    with torch.no_grad(), autocast():
        for i in range(0, len(dev_texts), BATCH):
            batch = tokenizer(dev_texts[i:i + BATCH], truncation=True, max_length=MAX_LENGTH,
                              padding=True, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1).tolist()
            correct += sum(p == y for p, y in zip(predicted, dev_labels[i:i + BATCH]))
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    mean_tokens = sum(len(ids) for ids in encoded["input_ids"]) / len(texts)

    def served(batch):
        with torch.no_grad(), autocast():
            return classify(batch, batch_size=BATCH, truncation=True, max_length=MAX_LENGTH)

    return dict(ex_per_s=steady_rate(times, steps), dev_accuracy=correct / len(dev_texts), wall_s=total,
                inference_ex_per_s=_inference_rate(served), precision="bf16 autocast" if bf16 else "float32",
                mean_train_tokens=mean_tokens, torch_threads=torch.get_num_threads(),
                matmul_peak_flops=peak)


def _inference_rate(predict, passes=2):
    """Examples/s of `predict` over the dev texts in batches of 32, after one warm-up batch;
    one rate per pass (the first meets each batch shape for the first time)."""
    texts, _ = read_tsv("dev.tsv")
    predict(texts[:BATCH])
    rates = []
    for _ in range(passes):
        start = time.time()
        for i in range(0, len(texts), BATCH):
            predict(texts[i:i + BATCH])
        rates.append(len(texts) / (time.time() - start))
    return rates


def train_flops_per_example(tokens, layers=6, width=384, intermediate=1536):
    """Useful training FLOPs of MiniLM-L6 on `tokens` real tokens: 3x forward (matmuls + attention)."""
    matmuls = layers * (4 * width * width + 2 * width * intermediate) + width * width
    forward = 2 * matmuls * tokens + layers * 4 * tokens * tokens * width
    return 3 * forward


def _ratio(summary, a, b):
    """summary[a] / summary[b], or None where one of them was not run."""
    return summary[a] / summary[b] if a in summary and b in summary else None


def write_report(results, steps, info, load_before, load_after):
    hf = results.get("hf_torch") or results.get("hf_torch_bf16")
    tokens = hf["mean_train_tokens"] if hf else None
    flops = train_flops_per_example(tokens) if tokens else None
    peak = max(result["matmul_peak_flops"] for result in results.values())
    summary = {"steps": steps, "batch_size": BATCH, "max_length": MAX_LENGTH,
               "mean_train_tokens": tokens, "machine": info, "matmul_peak_flops": peak,
               "load_average_before": load_before, "load_average_after": load_after,
               "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])}
    for name, result in results.items():
        summary[f"{name}_ex_per_s"] = result["ex_per_s"]
        summary[f"{name}_precision"] = result.get("precision", "float32")
        summary[f"{name}_dev_accuracy"] = result["dev_accuracy"]
        summary[f"{name}_mfu"] = result["ex_per_s"] * flops / peak if flops else None
        summary[f"{name}_train_wall_s"] = result["wall_s"]
        summary[f"{name}_matmul_peak_flops"] = result["matmul_peak_flops"]
        summary[f"{name}_load_average_before"] = result["load_average_before"]
        summary[f"{name}_load_average_after"] = result["load_average_after"]
        if "inference_ex_per_s" in result:
            summary[f"{name}_served_ex_per_s"] = result["inference_ex_per_s"]
    hf_names = [name for name in ("hf_torch", "hf_torch_bf16") if name in results]
    hf_best = max(hf_names, key=lambda name: results[name]["ex_per_s"], default=None)
    summary["hf_torch_best"] = hf_best
    ratios = {"tfimitate_vs_hf_torch": ("tfimitate_ex_per_s", "hf_torch_ex_per_s"),
              "tfimitate_vs_keras_hub": ("tfimitate_ex_per_s", "keras_hub_ex_per_s"),
              "auto_vs_float32": ("tfimitate_auto_ex_per_s", "tfimitate_ex_per_s"),
              "auto_vs_hf_torch_best": ("tfimitate_auto_ex_per_s", f"{hf_best}_ex_per_s")}
    for key, (a, b) in ratios.items():
        summary[key] = _ratio(summary, a, b)
    lines = [f"# Fine-tuning MiniLM-L6 on SST-2: {steps} steps of batch {BATCH}, max length {MAX_LENGTH}",
             "", machine.markdown(info, load_before, load_after), "",
             f"Command: `{summary['command']}`. Float32 matmul peak measured here: "
             f"{peak / 1e9:.0f} GFLOP/s (the MFU denominator). Mean real tokens per training "
             f"example: {tokens or float('nan'):.1f}.", "",
             "| framework | precision | train ex/s | MFU | dev accuracy | train wall s | served ex/s (2 passes) | matmul peak in its process | load before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in results:
        mfu = summary[name + "_mfu"]
        served = summary.get(name + "_served_ex_per_s")
        lines.append(f"| {name} | {summary[name + '_precision']} | {summary[name + '_ex_per_s']:.1f} | "
                     f"{'-' if mfu is None else f'{mfu:.1%}'} | "
                     f"{summary[name + '_dev_accuracy']:.4f} | {summary[name + '_train_wall_s']:.0f} | "
                     f"{'-' if not served else ' / '.join(f'{v:.0f}' for v in served)} | "
                     f"{summary[name + '_matmul_peak_flops'] / 1e9:.0f} GFLOP/s | "
                     f"{summary[name + '_load_average_before']} / {summary[name + '_load_average_after']} |")
    lines.append("")
    for key, target in (("tfimitate_vs_hf_torch", "1.3x"), ("tfimitate_vs_keras_hub", "3x"),
                        ("auto_vs_float32", "1.8x on a CPU with bf16 units"),
                        ("auto_vs_hf_torch_best", "2x on a CPU with bf16 units")):
        if summary[key] is not None:
            lines.append(f"- {key}: {summary[key]:.2f}x (target {target})")
    lines.append("")
    harness.save(_RESULTS_NAME.value, summary, "\n".join(lines))
    print("\n".join(lines))


def main(argv):
    del argv
    runners = {"tfimitate": run_tfimitate,
               "tfimitate_auto": lambda steps, scratch: run_tfimitate(steps, scratch, "auto"),
               "keras_hub": run_keras_hub, "hf_torch": run_hf_torch,
               "hf_torch_bf16": lambda steps, scratch: run_hf_torch(steps, scratch, bf16=True)}
    if _FRAMEWORK.value:
        with tempfile.TemporaryDirectory() as scratch:
            result = runners[_FRAMEWORK.value](_STEPS.value, scratch)
        with open(_RESULT.value, "w") as f:
            json.dump(result, f)
        return
    results = {}
    info, load_before = machine.describe(), machine.load_average()
    with tempfile.TemporaryDirectory() as scratch:
        for name in _FRAMEWORKS.value:
            path = os.path.join(scratch, f"{name}.json")
            before = machine.load_average()
            subprocess.run([sys.executable, os.path.abspath(__file__), f"--framework={name}",
                            f"--steps={_STEPS.value}", f"--result={path}"], check=True)
            with open(path) as f:
                results[name] = json.load(f)
            results[name].update(load_average_before=before, load_average_after=machine.load_average())
            print(name, results[name], flush=True)
    write_report(results, _STEPS.value, info, load_before, machine.load_average())


if __name__ == "__main__":
    app.run(main)
