"""Where a served request's time goes: tokenization, the model, the signature's own overhead,
for our exports (float32, bfloat16, int8) and for Hugging Face's pipeline (float32, bf16
autocast), on raw SST-2 dev strings in batches of 32, in process.

Each variant runs in its own child process, one after the other:
  * ours_<precision>: `workflow.export(--export_precision=<precision>)` of the run given by
    --model_dir (its accuracy gate scores it and float32 on the run's eval data: those are
    the accuracies reported; float32's comes from the others' gates), then per batch: the
    export's `serving_default` on the strings (total); the same export behind the dev
    server (its own process, one gRPC Predict per batch on loopback: gRPC texts/s); the
    task's tokenizer front alone (tokenization); what the signature runs on the tokenized
    batch, the Keras model in that precision on length-sorted groups of the batch with its
    dense layers on 2-D matmuls (task.served_forward: model); overhead = total -
    tokenization - model.
  * hf_<float32|bf16>: the packaged MiniLM-L6 as `AutoModelForSequenceClassification`
    (speed only: its head is untrained), `pipeline("text-classification")` (total), its
    tokenizer alone and the model alone (under `torch.autocast` for bf16).
Each part is timed over every dev batch, best of --passes passes. The results record the
CPU (benchmarks/machine.py) and the load average around each child.

Benchmark-only extras (never project dependencies):
    pip install torch==2.13.0 transformers==5.25.0
Run (about 10 minutes on 2 cores; --model_dir: a trained SST-2 run with dev as eval data):
    python benchmarks/served_breakdown.py --model_dir=runs/sst2
"""

import json
import os
import subprocess
import sys
import tempfile
import time

if not __package__:  # run as `python benchmarks/served_breakdown.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

BATCH, MAX_LENGTH = 32, 128
# ../shared/data/sst2 beside the checkout; a git worktree elsewhere sets TFIMITATE_SST2.
SST2 = os.environ.get("TFIMITATE_SST2") or os.path.normpath(
    os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))
VARIANTS = ("ours_float32", "ours_bfloat16", "ours_int8", "hf_float32", "hf_bf16")

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A trained text classification run.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), "Which variants to run, in order.")
_PASSES = flags.DEFINE_integer("passes", 2, "Timed passes over the dev set (best is kept).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None,
                                    "Time only the first N dev batches (default: all 28).")
_VARIANT = flags.DEFINE_enum("variant", None, VARIANTS, "Internal: run one variant.")
_RESULT = flags.DEFINE_string("result", None, "Internal: where the child writes its JSON.")


def batches():
    """The SST-2 dev texts in batches of BATCH (the first --max_batches)."""
    with open(os.path.join(SST2, "dev.tsv"), encoding="utf-8") as f:
        texts = [line.rstrip("\n").rsplit("\t", 1)[0] for line in f]
    return [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)][:_MAX_BATCHES.value or None]


def best_pass(function, inputs, passes):
    """Texts/s of `function` over every input batch, best of `passes` (after a warm-up pass)."""
    for batch in inputs:
        function(batch)
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for batch in inputs:
            function(batch)
        best = min(best, time.perf_counter() - start)
    return best


def run_ours(precision, model_dir, passes, scratch):
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf

    from tfimitate import export_precision, runs, workflow

    path = workflow.export(model_dir, os.path.join(scratch, "export"), precision=precision)
    record = export_precision.read(path)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    task, run, _ = runs.restore(model_dir)
    _, front = task.serving_signature(run)
    grouped = task.served_forward(export_precision.served(task, run, precision))
    tokenize = tf.function(lambda texts: front({"text": texts}))
    call = tf.function(grouped)
    texts = [tf.constant(batch) for batch in batches()]
    features = [tokenize(batch) for batch in texts]
    count = sum(len(batch) for batch in batches())
    total = best_pass(lambda batch: serve(text=batch)["probabilities"].numpy(), texts, passes)
    tokens = best_pass(lambda batch: tokenize(batch)["token_ids"].numpy(), texts, passes)
    forward = best_pass(lambda batch: call(batch).numpy(), features, passes)
    scores = {name: c.get("score") for name, c in record.get("candidates", {}).items()}
    return dict(texts=count, total_s=total, tokenize_s=tokens, model_s=forward,
                grpc_s=grpc_seconds(os.path.dirname(path), passes),
                accuracy=scores.get(precision), gate_scores=scores, threads=[tf.config.threading.get_inter_op_parallelism_threads(),
                                            tf.config.threading.get_intra_op_parallelism_threads()])


def grpc_seconds(base_path, passes):
    """Seconds for the dev batches through the dev server serving `base_path` (its own
    process) on loopback, one gRPC Predict per batch, best of `passes`."""
    from benchmarks.serving_load import start_server

    server, client = start_server(base_path, "sst2")
    try:
        return best_pass(lambda batch: client.predict("sst2", {"text": batch}), batches(), passes)
    finally:
        client.close()
        server.kill()
        server.wait()


def run_hf(bf16, passes):
    import contextlib

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from tfimitate.backbones import resolve_backbone

    path = resolve_backbone("minilm_l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    autocast = lambda: (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                        else contextlib.nullcontext())
    tokenize = lambda batch: tokenizer(batch, truncation=True, max_length=MAX_LENGTH,
                                       padding=True, return_tensors="pt")
    texts = batches()
    encoded = [tokenize(batch) for batch in texts]

    def served(batch):
        with torch.no_grad(), autocast():
            return classify(batch, batch_size=BATCH, truncation=True, max_length=MAX_LENGTH)

    def forward(batch):
        with torch.no_grad(), autocast():
            return model(**batch).logits.float().numpy()

    count = sum(len(batch) for batch in texts)
    return dict(texts=count, total_s=best_pass(served, texts, passes),
                tokenize_s=best_pass(tokenize, texts, passes),
                model_s=best_pass(forward, encoded, passes), accuracy=None,
                threads=[torch.get_num_interop_threads(), torch.get_num_threads()])


def write_report(results, info, before, after):
    lines = ["# Where served time goes: MiniLM-L6 on SST-2 dev, raw strings, batches of "
             f"{BATCH}, in process", "", machine.markdown(info, before, after), "",
             f"Command: `python benchmarks/served_breakdown.py {' '.join(sys.argv[1:])}`", "",
             "| variant | texts/s | gRPC texts/s | tokenization ms/batch | model ms/batch | "
             "signature/pipeline overhead ms/batch | dev accuracy | load before/after |",
             "|---|---|---|---|---|---|---|---|"]
    gated = {k: v for r in results.values() for k, v in r.get("gate_scores", {}).items() if v}
    for name, r in results.items():
        if name.startswith("ours_") and r["accuracy"] is None:
            r["accuracy"] = gated.get(name[5:])
        batches_n = -(-r["texts"] // BATCH)
        per = lambda seconds: 1000.0 * seconds / batches_n
        overhead = r["total_s"] - r["tokenize_s"] - r["model_s"]
        r.update(texts_per_s=r["texts"] / r["total_s"], overhead_s=overhead)
        accuracy = ("untrained head" if name.startswith("hf_") else "-" if r["accuracy"] is None
                    else f"{r['accuracy']:.4f}")
        grpc = f"{r['texts'] / r['grpc_s']:.0f}" if r.get("grpc_s") else "-"
        lines.append(f"| {name} | {r['texts_per_s']:.0f} | {grpc} | {per(r['tokenize_s']):.1f} | "
                     f"{per(r['model_s']):.1f} | {per(overhead):.1f} | {accuracy} | "
                     f"{r['load_average_before']} / {r['load_average_after']} |")
    ours = [n for n in results if n.startswith("ours_")]
    hf = [n for n in results if n.startswith("hf_")]
    summary = {"machine": info, "load_average_before": before, "load_average_after": after,
               "variants": results}
    if ours and hf:
        best_hf = max(hf, key=lambda n: results[n]["texts_per_s"])
        best = results[best_hf]["texts_per_s"]
        lines += [""] + [f"- {n} / {best_hf} (HF's best here): "
                         f"{results[n]['texts_per_s'] / best:.2f}x in process, "
                         f"{results[n]['texts'] / results[n]['grpc_s'] / best:.2f}x through the "
                         "dev server's gRPC (target 1.5x)" for n in ours]
        summary["hf_best"] = best_hf
    if "ours_float32" in results:
        lines += [f"- {n} / ours_float32: {results[n]['texts_per_s'] / results['ours_float32']['texts_per_s']:.2f}x"
                  for n in ours if n != "ours_float32"]
    lines.append("")
    harness.save("served_breakdown", summary, "\n".join(lines))
    print("\n".join(lines))


def main(argv):
    del argv
    if _VARIANT.value:
        name = _VARIANT.value
        with tempfile.TemporaryDirectory() as scratch:
            if name.startswith("ours_"):
                result = run_ours(name[5:], _MODEL_DIR.value, _PASSES.value, scratch)
            else:
                result = run_hf(name == "hf_bf16", _PASSES.value)
        with open(_RESULT.value, "w") as f:
            json.dump(result, f)
        return
    if any(v.startswith("ours_") for v in _VARIANTS.value) and not _MODEL_DIR.value:
        raise app.UsageError("--model_dir is required for the ours_* variants.")
    results, info, before = {}, machine.describe(), machine.load_average()
    with tempfile.TemporaryDirectory() as scratch:
        for name in _VARIANTS.value:
            path = os.path.join(scratch, f"{name}.json")
            load = machine.load_average()
            subprocess.run([sys.executable, os.path.abspath(__file__), f"--variant={name}",
                            f"--model_dir={_MODEL_DIR.value or ''}", f"--passes={_PASSES.value}",
                            f"--max_batches={_MAX_BATCHES.value or 0}",
                            f"--result={path}"], check=True)
            with open(path) as f:
                results[name] = json.load(f)
            results[name].update(load_average_before=load, load_average_after=machine.load_average())
            print(name, results[name], flush=True)
    write_report(results, info, before, machine.load_average())


if __name__ == "__main__":
    app.run(main)
