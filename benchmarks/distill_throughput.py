"""Served throughput of a teacher and its distilled student: two SavedModels, raw strings in.

Both SavedModels are loaded in this one process and called through their
`serving_default` signature (tokenization inside the graph, as TF Serving runs them)
on the same texts in the same batches. After one warm-up pass each, they take turns
for --rounds passes over the texts, so both see the same machine load; the rate is
texts / median pass time. The CPU model and the load average before and after are
recorded. Results go to benchmarks/results/<name>.{json,md}; with --report the numbers
are also added to the student's eval/distill.json as `served_throughput`.

Run from the repository root (so this checkout's tfimitate is imported):
    python -m benchmarks.distill_throughput --teacher=saved_models/sst2_minilm/1 \
        --student=saved_models/distill_sst2_l3/1 --data=../shared/data/sst2/test.tsv \
        --report=runs/distill_sst2_l3/eval/distill.json
"""

import json
import os
import statistics
import sys
import time

if not __package__:  # run as `python benchmarks/distill_throughput.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402


_TEACHER = flags.DEFINE_string("teacher", None, "The teacher's SavedModel version directory.")
_STUDENT = flags.DEFINE_string("student", None, "The student's SavedModel version directory.")
_DATA = flags.DEFINE_string("data", None, "Texts: a .txt file (one per line) or a .tsv whose "
                            "first column is the text (SST-2).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per call.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed passes over the texts per model.")
_NAME = flags.DEFINE_string("name", "distill_throughput", "Base name of the result files.")
_RESULTS = flags.DEFINE_string("results", harness.RESULTS, "Where results go.")
_REPORT = flags.DEFINE_string("report", None, "A run's eval/distill.json to add the numbers to.")


def read_texts(path):
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    return [line.split("\t")[0] for line in lines] if path.endswith(".tsv") else lines


def one_pass(serve, batches):
    import tensorflow as tf

    start = time.perf_counter()
    for batch in batches:
        serve(text=tf.constant(batch))["probabilities"].numpy()
    return time.perf_counter() - start


def main(argv):
    del argv
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF Text ops the graphs use)

    from tfimitate import files

    texts = read_texts(_DATA.value)
    batches = [texts[i:i + _BATCH_SIZE.value] for i in range(0, len(texts), _BATCH_SIZE.value)]
    models = {"teacher": _TEACHER.value, "student": _STUDENT.value}
    serve = {who: tf.saved_model.load(path).signatures["serving_default"]
             for who, path in models.items()}
    before = machine.describe()
    for who in models:
        one_pass(serve[who], batches)  # warm-up: traces, allocates
    seconds = {who: [] for who in models}
    for _ in range(_ROUNDS.value):
        for who in models:
            seconds[who].append(one_pass(serve[who], batches))
    after = machine.describe()
    rates = {who: round(len(texts) / statistics.median(times), 1) for who, times in seconds.items()}
    result = {"models": models, "data": _DATA.value, "texts": len(texts),
              "batch_size": _BATCH_SIZE.value, "rounds": _ROUNDS.value,
              "texts_per_second": rates,
              "speedup": round(rates["student"] / rates["teacher"], 2),
              "pass_seconds": {who: [round(s, 2) for s in times] for who, times in seconds.items()},
              "machine_before": before, "machine_after": after}
    harness.save(_NAME.value, result, markdown(result), _RESULTS.value)
    if _REPORT.value:
        with open(_REPORT.value) as f:
            report = json.load(f)
        report["served_throughput"] = result
        files.write_atomically(_REPORT.value, json.dumps(report, indent=2))
    print(markdown(result))


def markdown(result):
    rates = result["texts_per_second"]
    before, after = result["machine_before"], result["machine_after"]
    return (
        "# Served throughput: teacher vs distilled student\n\n"
        f"`serving_default` of each SavedModel, raw strings in, batch {result['batch_size']}, "
        f"{result['texts']} texts of `{result['data']}`, median of {result['rounds']} alternating "
        "passes after one warm-up pass each, one process.\n\n"
        "| model | SavedModel | texts/s |\n|---|---|---|\n"
        f"| teacher | `{result['models']['teacher']}` | {rates['teacher']} |\n"
        f"| student | `{result['models']['student']}` | {rates['student']} |\n\n"
        f"Student / teacher: **{result['speedup']}x**. CPU: {before['cpu_model']}, "
        f"{before['cores']} cores; 1-minute load average {before['load_average'][0]} before, "
        f"{after['load_average'][0]} after.\n")


if __name__ == "__main__":
    flags.mark_flags_as_required(["teacher", "student", "data"])
    app.run(main)
