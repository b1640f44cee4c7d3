"""Served cost of one multi-task SavedModel vs one single-task SavedModel per subtask.

Each arm runs in a fresh child process (so memory is its own): it loads the SavedModel(s),
answers every subtask for the same texts in batches (the multi-task model through its
`<subtask>` signatures, the single-task models through their `serving_default`), and
reports the resident memory after loading and at the end, and the median time per batch
to answer all subtasks. Writes benchmarks/results/<name>.{json,md} with the machine record.

    python benchmarks/multitask_serving.py --multi=saved_models/multitask_sst2_conll/1 \
        --singles=sentiment=saved_models/sst2_minilm/1,entities=saved_models/conll2003_minilm/1 \
        --data=../shared/data/sst2/test.tsv
"""

import json
import os
import statistics
import subprocess
import sys
import time

if not __package__:  # run as `python benchmarks/multitask_serving.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402
from tfimitate.errors import UserError, run_cli  # noqa: E402

_MULTI = flags.DEFINE_string("multi", None, "The multi-task SavedModel version directory.")
_SINGLES = flags.DEFINE_list("singles", None,
                             "SUBTASK=DIR pairs: each subtask's single-task SavedModel version.")
_DATA = flags.DEFINE_string("data", None, "Texts: a .txt file (one per line) or a .tsv (first column).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per call.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed passes over the texts.", lower_bound=1)
_LIMIT = flags.DEFINE_integer("limit", 512, "Texts to use (the first ones).", lower_bound=1)
_NAME = flags.DEFINE_string("name", "multitask_serving", "Base name of the result files.")
_RESULTS = flags.DEFINE_string("results", harness.RESULTS, "Where results go.")
_ARM = flags.DEFINE_string("arm", None, "Internal: run one arm (JSON) and print its result.")


def _rss_mb(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _run_arm(arm):
    """Loads the arm's signatures {subtask: (dir, signature)}; times one batch of all."""
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF Text ops the graphs use)

    baseline = _rss_mb()
    loaded = {path: tf.saved_model.load(path) for path, _ in arm["signatures"].values()}
    serve = {name: loaded[path].signatures[signature]
             for name, (path, signature) in arm["signatures"].items()}
    after_load = _rss_mb()
    texts = arm["texts"]
    batches = [texts[i:i + arm["batch_size"]] for i in range(0, len(texts), arm["batch_size"])]

    def one_pass():
        start = time.perf_counter()
        for batch in batches:
            for function in serve.values():
                [v.numpy() for v in function(text=tf.constant(batch)).values()]
        return time.perf_counter() - start

    one_pass()  # warm-up
    seconds = [one_pass() for _ in range(arm["rounds"])]
    return {"rss_mb_baseline": baseline, "rss_mb_loaded": after_load,
            "rss_mb_peak": _rss_mb("VmHWM"),
            "ms_per_batch_all_subtasks": round(1000 * statistics.median(seconds) / len(batches), 2),
            "pass_seconds": [round(s, 2) for s in seconds]}


def main(argv):
    del argv
    if _ARM.value:
        print(json.dumps(_run_arm(json.loads(_ARM.value))))
        return
    if not (_MULTI.value and _SINGLES.value and _DATA.value):
        raise UserError("--multi, --singles and --data are required (see the module docstring).")
    singles = dict(entry.split("=", 1) for entry in _SINGLES.value)
    with open(_DATA.value, encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t")[0] for line in f if line.strip()][:_LIMIT.value]
    common = {"texts": texts, "batch_size": _BATCH_SIZE.value, "rounds": _ROUNDS.value}
    arms = {"multi_task": {name: (_MULTI.value, name) for name in singles},
            "single_tasks": {name: (path, "serving_default") for name, path in singles.items()}}
    before = machine.describe()
    results = {}
    for arm, signatures in arms.items():
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--arm={json.dumps(dict(common, signatures=signatures))}"],
            capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise UserError(f"the {arm} arm failed: {child.stderr.strip().splitlines()[-1]}")
        results[arm] = json.loads(child.stdout.strip().splitlines()[-1])
    after = machine.load_average()
    result = {"multi": _MULTI.value, "singles": singles, "data": _DATA.value, "texts": len(texts),
              "batch_size": _BATCH_SIZE.value, "rounds": _ROUNDS.value, "arms": results,
              "machine": before, "load_after": after}
    rows = ["| arm | RSS loaded (MB) | peak RSS (MB) | ms per batch, all subtasks |", "|---|---|---|---|"]
    rows += [f"| {arm} | {r['rss_mb_loaded']} | {r['rss_mb_peak']} | {r['ms_per_batch_all_subtasks']} |"
             for arm, r in results.items()]
    harness.save(_NAME.value, result, "\n".join(
        [f"# Multi-task vs single-task serving ({len(texts)} texts of {_DATA.value}, batch "
         f"{_BATCH_SIZE.value})", ""] + rows + ["", machine.markdown(before, before["load_average"], after)]) + "\n",
        _RESULTS.value)
    print("\n".join(rows))


if __name__ == "__main__":
    run_cli(main)
