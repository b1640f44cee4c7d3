"""Where served time goes at variable shapes: the text classifier from raw strings vs HF.

Classifies the SST-2 dev texts (872) in batches of 32 with the packaged MiniLM-L6 (the
weights do not matter for speed), three passes each, every variant in a fresh process
so no kernel cache is shared:
  * tfimitate's serving function reloaded from a SavedModel, padding each batch to
    a length chosen by the variant: `trim` (its longest example: what ships,
    tfimitate.serving.lengths), `8`/`16` (rounded up to a multiple of 8/16),
    `16,32,64` (the smallest of those, or 128), `128` (always the full length);
  * the same `trim` with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), and with one inter-op
    thread (`trim_inter_op_1`: TF Serving's --tensorflow_inter_op_parallelism=1);
  * `grpc`: the same export served by the dev server in its own process, one gRPC
    Predict per batch on loopback (what a client of the server sees);
  * a decomposition (`parts`): tokenization alone, the Keras model alone on
    pre-tokenized batches, the in-process tf.function and the reloaded signature;
  * Hugging Face: `pipeline("text-classification")`, and its model alone.
Pass 1 meets every batch shape for the first time; passes 2-3 reuse them. `mixed`
rows send the same texts, shuffled, in requests of 1-32 texts (TF Serving's allowed
batch sizes), as a server sees them: many more [batch, length] shapes. Each pass
records texts/s (wall clock) and the process's CPU milliseconds per text, which other
work on a shared machine disturbs far less than the wall clock.

Run with the benchmark venv (torch + transformers; never project dependencies):
    python benchmarks/served_shapes.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time

if not __package__:  # run as `python benchmarks/served_shapes.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

SST2 = os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "sst2"))
BATCH, MAX_LENGTH, PASSES = 32, 128, 3
VARIANTS = ("trim", "16", "16,32,64", "128", "trim_onednn_off", "trim_inter_op_1", "parts",
            "grpc", "hf")

_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), "Variants to run, in order.")
_CHILD = flags.DEFINE_string("child", None, "Internal: run one variant.")
_RESULT = flags.DEFINE_string("result", None, "Internal: where the child writes its JSON.")


def dev_batches():
    with open(os.path.join(SST2, "dev.tsv"), encoding="utf-8") as f:
        texts = [line.rstrip("\n").rsplit("\t", 1)[0] for line in f]
    return [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]


def mixed_batches(seed=0):
    """The dev texts shuffled into requests of 1, 2, 4, 8, 16 or 32 texts."""
    import random

    rng = random.Random(seed)
    texts = [t for batch in dev_batches() for t in batch]
    rng.shuffle(texts)
    batches = []
    while texts:
        size = rng.choice((1, 2, 4, 8, 16, 32))
        batches.append(texts[:size])
        texts = texts[size:]
    return batches


def passes(run, items, texts, count=PASSES, cpu_seconds=time.process_time):
    """Texts/s and CPU ms per text (from `cpu_seconds`, this process's by default) of `run`
    over `items` (the batches of `texts` texts), `count` times, with no warm-up."""
    rates, cpu = [], []
    for _ in range(count):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        for item in items:
            run(item)
        rates.append(texts / (time.perf_counter() - start))
        cpu.append(1000 * (cpu_seconds() - start_cpu) / texts)
    return {"texts_per_s": rates, "cpu_ms_per_text": cpu}


def tf_variant(variant, scratch):
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    from tfimitate import runs
    from tfimitate.config import Experiment
    from tfimitate.serving import lengths
    from tfimitate.tasks.base import Run
    from tfimitate.tasks.text_classification import TextClassification

    if variant.endswith("_inter_op_1"):  # one op at a time, each on both cores
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if variant == "16,32,64":  # the smallest of these (or 128) that holds the batch
        buckets = tf.constant([16, 32, 64, MAX_LENGTH])
        lengths.served_length = lambda longest, sequence_length: tf.reduce_min(
            tf.boolean_mask(buckets, buckets >= tf.cast(longest, tf.int32)))
    elif variant.isdigit():  # round up to a multiple (128: always the full length)
        lengths.MULTIPLE = int(variant)
    cfg = Experiment(model_dir=scratch, backbone="minilm_l6", sequence_length=MAX_LENGTH,
                     labels=("0", "1"), text_column="0", label_column="1")
    task = TextClassification()
    preprocessor = task.make_preprocessor(cfg)
    model = runs.build_model(task, cfg, 2, ())
    labels_file = runs.write_labels(scratch, cfg.labels)
    module = task.serving_module(Run(cfg, model, preprocessor, tf.distribute.get_strategy()),
                                 labels_file)
    batches = dev_batches()
    texts = sum(map(len, batches))
    result = {"tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                             tf.config.threading.get_inter_op_parallelism_threads()]}
    if variant == "parts":
        tokenize = tf.function(lambda text: preprocessor(x=text),
                               input_signature=[tf.TensorSpec([None], tf.string)])
        tokenized = []
        for batch in batches:
            features = tokenize(tf.constant(batch))
            longest = int(tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), 1)))
            tokenized.append({k: v[:, :longest] for k, v in features.items()})
        spec = {k: tf.TensorSpec([None, None], v.dtype) for k, v in tokenized[0].items()}
        forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        result["model_only_on_tokenized"] = passes(lambda i: forward(tokenized[i]),
                                                   range(len(tokenized)), texts)
        result["tokenize_only"] = passes(lambda b: tokenize(tf.constant(b)), batches, texts)
        result["in_process_function"] = passes(lambda b: module.serve(tf.constant(b)), batches,
                                               texts)
    path = os.path.join(scratch, "saved")
    tf.saved_model.save(module, os.path.join(path, "1"), signatures={"serving_default": module.serve})
    if variant == "grpc":
        return grpc_passes(path, batches, texts)
    served = tf.saved_model.load(os.path.join(path, "1")).signatures["serving_default"]
    result["savedmodel_signature"] = passes(lambda b: served(text=tf.constant(b)), batches, texts)
    result["savedmodel_signature_mixed"] = passes(lambda b: served(text=tf.constant(b)),
                                                  mixed_batches(), texts, count=2)
    return result


def grpc_passes(base_path, batches, texts):
    """The same export served by the dev server (its own process) on loopback, one Predict
    per batch; CPU ms/text counts the server's and this client's processes."""
    from benchmarks.serving_load import start_server

    server, client = start_server(base_path, "sst2")
    try:
        def cpu_seconds():
            with open(f"/proc/{server.pid}/stat") as f:
                user, system = f.read().rsplit(")", 1)[1].split()[11:13]
            return (int(user) + int(system)) / os.sysconf("SC_CLK_TCK") + time.process_time()

        predict = lambda batch: client.predict("sst2", {"text": batch})
        return {"grpc_predict": passes(predict, batches, texts, cpu_seconds=cpu_seconds),
                "grpc_predict_mixed": passes(predict, mixed_batches(), texts, count=2,
                                             cpu_seconds=cpu_seconds)}
    finally:
        client.close()
        server.kill()
        server.wait()


def hf_variant():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    from tfimitate.backbones import resolve_backbone

    path = resolve_backbone("minilm_l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    batches = dev_batches()
    texts = sum(map(len, batches))
    encoded = [tokenizer(b, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
               for b in batches]

    def forward(i):
        with torch.no_grad():
            model(**encoded[i])

    return {"torch_threads": torch.get_num_threads(),
            "pipeline": passes(lambda b: classify(b, batch_size=BATCH, truncation=True,
                                                  max_length=MAX_LENGTH), batches, texts),
            "model_only_on_tokenized": passes(forward, range(len(encoded)), texts),
            "pipeline_mixed": passes(lambda b: classify(b, batch_size=BATCH, truncation=True,
                                                        max_length=MAX_LENGTH), mixed_batches(),
                                     texts, count=2)}


def run_child(variant):
    with tempfile.TemporaryDirectory() as scratch:
        return hf_variant() if variant == "hf" else tf_variant(variant, scratch)


def mean_rate(results, variant, measured):
    """The mean texts/s over the passes of one measurement, or None if it did not run."""
    rates = results.get(variant, {}).get(measured, {}).get("texts_per_s")
    return sum(rates) / len(rates) if rates else None


def ratios_to_hf(results):
    """Texts/s of the shipped export (in process, and behind the dev server over gRPC) over
    the HF pipeline's on the same batches, mean of the passes; the targets are >= 1.0."""
    ratios = {}
    for name, variant, measured, baseline in (
            ("savedmodel / hf pipeline", "trim", "savedmodel_signature", "pipeline"),
            ("savedmodel / hf pipeline, mixed requests", "trim", "savedmodel_signature_mixed",
             "pipeline_mixed"),
            ("grpc dev server / hf pipeline", "grpc", "grpc_predict", "pipeline"),
            ("grpc dev server / hf pipeline, mixed requests", "grpc", "grpc_predict_mixed",
             "pipeline_mixed")):
        ours, theirs = mean_rate(results, variant, measured), mean_rate(results, "hf", baseline)
        if ours and theirs:
            ratios[name] = round(ours / theirs, 3)
    return ratios


def write_report(results, before, after, info, command):
    ratios = ratios_to_hf(results)
    summary = {"machine": info, "load_average_before": before,
               "load_average_after": after, "batch_size": BATCH, "max_length": MAX_LENGTH,
               "texts": sum(map(len, dev_batches())), "results_texts_per_s": results,
               "ratios_to_hf_pipeline": ratios, "command": command}
    lines = [f"# Served text classification at variable shapes: MiniLM-L6, SST-2 dev, batch {BATCH}", "",
             machine.markdown(summary["machine"], before, after), "",
             f"Command: `{summary['command']}`. Pass 1 meets each batch shape first; every "
             "variant runs in a fresh process. CPU ms/text is the process's CPU time (both "
             "cores count; for grpc the server's and the client's), steadier than texts/s "
             "when the machine is shared.", "",
             "| variant | measured | texts/s pass 1 / 2 (/ 3) | CPU ms/text pass 1 / 2 (/ 3) | load after |",
             "|---|---|---|---|---|"]
    for variant, measured in results.items():
        for name, value in measured.items():
            if isinstance(value, dict):
                lines.append(
                    f"| {variant} | {name} | " + " / ".join(f"{r:.1f}" for r in value["texts_per_s"])
                    + " | " + " / ".join(f"{c:.1f}" for c in value["cpu_ms_per_text"])
                    + f" | {measured['load_average_after']} |")
    if ratios:
        lines += ["", "| texts/s ratio (mean of the passes) | |", "|---|---|"]
        lines += [f"| {name} | **{value:.2f}x** |" for name, value in ratios.items()]
    harness.save("served_shapes", summary, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv):
    del argv
    if _CHILD.value:
        result = run_child(_CHILD.value)
        with open(_RESULT.value, "w") as f:
            json.dump(result, f)
        return
    before = machine.load_average()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in _VARIANTS.value:
            path = os.path.join(scratch, "result.json")
            env = dict(os.environ)
            if variant.endswith("onednn_off"):
                env["TF_ENABLE_ONEDNN_OPTS"] = "0"
            subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={variant}",
                            f"--result={path}"], check=True, env=env)
            with open(path) as f:
                results[variant] = json.load(f)
            results[variant]["load_average_after"] = round(os.getloadavg()[0], 2)
            print(variant, results[variant], flush=True)
    write_report(results, before, machine.load_average(), machine.describe(),
                 "python benchmarks/served_shapes.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    app.run(main)
