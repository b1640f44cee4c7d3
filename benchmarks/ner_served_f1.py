"""Served entity F1 of an exported NER SavedModel on raw text, against the run's own test F1.

The CoNLL sentences of --data are joined by single spaces and sent to the
SavedModel's `serving_default(text)`; the entity spans it returns (type, byte
start, byte end) are scored against the gold spans (`tfimitate.tasks.ner_skew`).
With --model_dir, the in-framework F1 of that run (eval/test_metrics.json) is
shown next to it. Results go to benchmarks/results/ner_served_f1.{json,md}.

Run from the repository root (so this checkout's tfimitate is imported):
    python -m benchmarks.ner_served_f1 --saved_model=runs/conll_export/1 \
        --data=../shared/data/conll2003/test.txt --model_dir=runs/conll
"""

import json
import os
import sys
import time

if not __package__:  # run as `python benchmarks/ner_served_f1.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402


_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "SavedModel version directory.")
_DATA = flags.DEFINE_string("data", None, "CoNLL/JSONL file of gold sentences.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None,
                                 "The training run, for its eval/test_metrics.json (optional).")
_NAME = flags.DEFINE_string("name", "ner_served_f1", "Base name of the result files.")
_RESULTS = flags.DEFINE_string("results", harness.RESULTS, "Where results go.")


def main(argv):
    del argv
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF Text ops the graph uses)

    from tfimitate.data import conll
    from tfimitate.tasks import ner_skew

    sentences = conll.read_sentences(_DATA.value, "--data")
    serve = tf.saved_model.load(_SAVED_MODEL.value).signatures["serving_default"]
    start = time.perf_counter()
    served = ner_skew.served_f1(lambda text: serve(text=text), sentences)
    seconds = time.perf_counter() - start
    match = ner_skew.word_match(sentences, examples=0)
    result = {"saved_model": _SAVED_MODEL.value, "data": _DATA.value, "served": served,
              "word_match": match.share, "serve_seconds": round(seconds, 1),
              "machine": machine.describe()}
    if _MODEL_DIR.value:
        with open(os.path.join(_MODEL_DIR.value, "eval", "test_metrics.json")) as f:
            test = json.load(f)
        result["test_metrics"] = {k: test[k] for k in ("precision", "recall", "f1", "step", "data")}
        result["gap_points"] = round(100 * (served["f1"] - test["f1"]), 2)
    text = markdown(result)
    harness.save(_NAME.value, result, text, _RESULTS.value)
    print(text)


def markdown(result):
    served, info = result["served"], result["machine"]
    lines = [f"# Served entity F1 of `{result['saved_model']}` on raw text", "",
             f"Data: `{result['data']}`, {served['sentences']} sentences joined by single spaces "
             f"({result['word_match']:.2%} re-split word for word by this checkout's "
             f"`ner_words`); {result['serve_seconds']} s "
             f"through `serving_default` on {info['cpu_model']}, {info['cores']} cores, 1-minute "
             f"load average {info['load_average'][0]} at the end.", "",
             "| | precision | recall | F1 |", "|---|---|---|---|",
             f"| served spans (type, byte start, byte end) | {served['precision']:.4f} | "
             f"{served['recall']:.4f} | {served['f1']:.4f} |"]
    if "test_metrics" in result:
        test = result["test_metrics"]
        lines += [f"| in-framework test (seqeval, step {test['step']}) | {test['precision']:.4f} | "
                  f"{test['recall']:.4f} | {test['f1']:.4f} |", "",
                  f"Served minus in-framework F1: {result['gap_points']:+.2f} points."]
    lines += ["", "| type | gold | predicted | correct | F1 |", "|---|---|---|---|---|"]
    for kind, s in served["per_type"].items():
        lines.append(f"| {kind} | {s['gold']} | {s['predicted']} | {s['correct']} | {s['f1']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    flags.mark_flags_as_required(["saved_model", "data"])
    app.run(main)
