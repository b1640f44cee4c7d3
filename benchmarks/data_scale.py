"""Data at scale (issue 25): memory, start-up and throughput of training as the data grows,
next to a plain tf.data pipeline over the same files.

Data (made once under --scratch, reused): SST-2's real training sentences recombined
(benchmarks/scale_data.py: the start of one sentence joined to the end of another, label
from the first; ~107 bytes a row) into one TSV of 10 k, 1 M and 4 M rows, and the same
4 M rows as 16 shards `train-000NN-of-00016.tsv`; each file has a `sentence<TAB>label`
header (the dev file is SST-2's, copied with that header). Rows of the table: 10k, 1m,
4m, 4m_16 as `--stream_data=auto` reads them (today: 10k in memory, the others streamed: a
file over 64 MiB or several files), and 1m_memory / 4m_memory, the same 1 M / 4 M file
forced into memory with `--stream_data=off` (the path before streaming; 4m_memory is not
run by default: it peaks near 5 GiB and takes minutes). The runs give --labels and
--max_steps, so a stream is not counted first.

Each measurement is its own child process, one at a time (benchmarks/proc_tree.py polls
/proc every 0.1 s; CPU is user+sys of the child's whole process tree):
  * ours: `python -m tfimitate.train` (text_classification, minilm_l6, sequence length
    128, batch 32, --labels=0,1, dev as --eval_data, no export) for --max_steps steps:
    peak memory of the tree; CPU and wall seconds when the log shows "Epoch 1/" (reading,
    model and pipeline built: the loop starts) and "First call of the train step" (the
    first step done); CPU at exit. Then the same for --steady_steps steps: steady
    examples/s = (steady_steps - 5) * 32 / (wall time of the step-`steady_steps` loss
    event - that of step 5), from the run's TensorBoard loss events (one per step), so
    tracing, the first batches and the final evaluation are left out; and steady examples
    per CPU second over the same steps (the tree's CPU interpolated from the 0.1 s polls at
    those two event times), which other work on a shared machine disturbs far less.
    With --steady_rounds=N each row gets N such runs, round-robin, and the best counts.
  * baseline: TextLineDataset over the same file(s) (interleaved over shards, header
    skipped) -> split on tab -> batch 1024 -> the backbone's keras-hub preprocessor
    (`backbones.load_text_preprocessor("minilm_l6", 128)`) as a parallel map -> prefetch:
    peak memory, seconds (and CPU seconds) from building the pipeline to its first batch,
    and examples/s tokenized over --baseline_examples examples after the first batch.
A row whose run fails (e.g. a file pattern before pattern support) records the error's
last line instead of stopping the benchmark. Re-running some --datasets replaces those
rows in benchmarks/results/data_scale.{json,md} and keeps the others.

Targets (issue 25): peak memory (4 M rows in 16 shards) / (10 k) <= 1.2; time to the
first step, same ratio, <= 1.5 (wall, and CPU shown beside it: the machine is shared);
steady examples/s streamed (16 shards) / in memory (--in_memory_reference, default the
1 M file in memory) >= 0.95, and the same for the 1 M file streamed / in memory.

Run from the repository root (the 10 k row takes ~3 minutes on 2 cores, the default rows
about 25; data is made once, ~10 s, 1 GB):
    python benchmarks/data_scale.py --datasets=10k
    python benchmarks/data_scale.py            # 10k,1m,1m_memory,4m,4m_16
    python benchmarks/data_scale.py --datasets=4m_memory --baseline_examples=0
    # throughput again, 3 round-robin runs per row, keeping the other figures:
    python benchmarks/data_scale.py --datasets=1m,1m_memory,4m_16 --max_steps=0 \
        --baseline_examples=0 --steady_rounds=3
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

if not __package__:  # run as `python benchmarks/data_scale.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine, proc_tree, scale_data  # noqa: E402

NAME = "data_scale"
BATCH, SEQUENCE_LENGTH, BACKBONE, WARMUP_STEPS = 32, 128, "minilm_l6", 5
BASELINE_BATCH = 1024
# name: (rows, files, extra train flags). --stream_data=auto streams several files and files
# over 64 MiB, so the *_memory rows force today's in-memory path on the same file.
DATASETS = {"10k": (10_000, 1, ()), "1m": (1_000_000, 1, ()),
            "1m_memory": (1_000_000, 1, ("--stream_data=off",)), "4m": (4_000_000, 1, ()),
            "4m_memory": (4_000_000, 1, ("--stream_data=off",)), "4m_16": (4_000_000, 16, ())}
DEFAULT_DATASETS = ("10k", "1m", "1m_memory", "4m", "4m_16")
MARKS = {"loop_start": "Epoch 1/", "first_step": "First call of the train step"}

# The benchmark's own flags, parsed only when it runs: importing it (as its tests do) must
# not define flags in absl's global FLAGS, where tfimitate.flags defines --max_steps too.
_FLAGS = flags.FlagValues()


def _flag(kind, *args, **kwargs):
    return getattr(flags, f"DEFINE_{kind}")(*args, flag_values=_FLAGS, **kwargs)


_SCRATCH = _flag("string", "scratch", "/tmp/tfimitate-data-scale",
                 "Where the data, run directories and logs go (data is reused).")
_SST2 = _flag("string", "sst2_dir",
              os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "sst2")),
              "SST-2's headerless train.tsv and dev.tsv (text<TAB>label).")
_DATASETS = _flag("list", "datasets", list(DEFAULT_DATASETS),
                  f"Rows to (re-)measure, of {list(DATASETS)}.")
_MAX_STEPS = _flag("integer", "max_steps", 5,
                   "Steps of the memory / start-up run (0: skip it, keep the saved one).")
_STEADY_STEPS = _flag("integer", "steady_steps", 60,
                      f"Steps of the throughput run (0: skip it; else > {WARMUP_STEPS}).")
_STEADY_ROUNDS = _flag(
    "integer", "steady_rounds", 1, "Throughput runs per row, taken round-robin over the rows; "
    "the best counts (the machine is shared: load from other work only slows a run down).",
    lower_bound=1)
_BASELINE_EXAMPLES = _flag("integer", "baseline_examples", 200_000,
                           "Examples the tf.data baseline tokenizes (0: skip it).")
_REFERENCE = _flag("enum", "in_memory_reference", "1m_memory", ["10k", "1m_memory", "4m_memory"],
                   "The in-memory run whose examples/s the stream is compared to.")
_NICE = _flag("boolean", "nice", True, "Run the children under `nice -n 10`.")
_BASELINE_DATA = _flag("string", "baseline_data", None, "Internal: the baseline child's files.")
_RESULT = _flag("string", "result", None, "Internal: where the baseline child writes JSON.")


def make_data(scratch, name):
    """The --train_data value of data set `name` (a file or a pattern), made if missing."""
    rows, shards, _ = DATASETS[name]
    directory = os.path.join(scratch, "data")
    os.makedirs(directory, exist_ok=True)
    label = f"{rows // 1_000_000}m" if rows >= 1_000_000 else f"{rows // 1000}k"
    single = os.path.join(directory, f"rows-{label}.tsv")
    sharded = os.path.join(directory, f"rows-{label}-{shards}")
    if os.path.exists(single if shards == 1 else sharded):
        return single if shards == 1 else os.path.join(sharded, f"train-*-of-{shards:05d}.tsv")
    source = scale_data.Sentences.from_tsv(os.path.join(_SST2.value, "train.tsv"))
    if shards == 1:
        return scale_data.write_tsv(source, rows, single)
    return scale_data.write_shards(source, rows, sharded, shards)


def dev_file(scratch):
    """SST-2's dev file with the `sentence<TAB>label` header the column flags name."""
    path = os.path.join(scratch, "data", "dev.tsv")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.path.join(_SST2.value, "dev.tsv"), "rb") as f:
            rows = f.read()
        with open(path + ".tmp", "wb") as f:
            f.write(scale_data.HEADER + rows)
        os.replace(path + ".tmp", path)
    return path


def _child(command):
    return (["nice", "-n", "10"] if _NICE.value else []) + command


def _shown(command):
    return " ".join(["python"] + command[command.index(sys.executable) + 1:]).replace(
        harness.ROOT + os.sep, "")


def train_flags(data, eval_data, model_dir, steps):
    return ["--task=text_classification", f"--backbone={BACKBONE}", f"--train_data={data}",
            f"--eval_data={eval_data}", "--text_column=sentence", "--label_column=label",
            "--labels=0,1", f"--max_steps={steps}", f"--batch_size={BATCH}",
            f"--sequence_length={SEQUENCE_LENGTH}", f"--model_dir={model_dir}"]


def measure_train(scratch, name, data, steps):
    """One training child: memory, CPU/wall marks, exit CPU, steady rate if steps allow."""
    model_dir = os.path.join(scratch, "runs", f"{name}-{steps}")
    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(model_dir), exist_ok=True)
    command = _child([sys.executable, "-m", "tfimitate.train",
                      *train_flags(data, dev_file(scratch), model_dir, steps), *DATASETS[name][2]])
    before = machine.load_average()
    run = proc_tree.watch(command, MARKS, log=model_dir + ".log", cwd=harness.ROOT)
    result = {"command": _shown(command), "load_before": before,
              "load_after": machine.load_average(), "log": model_dir + ".log"}
    result.update({key: run[key] for key in ("wall_s", "peak_rss_gib", "max_rss_gib", "cpu_s",
                                             "marks")})
    result["data_path"] = _data_path(model_dir + ".log")
    if run["returncode"] != 0:
        result["error"] = _error_line(run["stderr_tail"])
    elif steps > WARMUP_STEPS:
        times = harness.loss_wall_times(model_dir)
        examples = (steps - WARMUP_STEPS) * BATCH
        cpu = [proc_tree.cpu_at(run["cpu_series"], times[step]) for step in (WARMUP_STEPS, steps)]
        result["steady_ex_per_s"] = round(examples / (times[steps] - times[WARMUP_STEPS]), 1)
        result["steady_ex_per_cpu_s"] = round(examples / (cpu[1] - cpu[0]), 2)
    shutil.rmtree(model_dir, ignore_errors=True)
    return result


def _error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def _data_path(log):
    """How the run read --train_data: "streamed (<reason>)" as data/streams.py logs it, or
    "in memory" (that path logs nothing)."""
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "--train_data=" in line and ": streamed (" in line:
                return "streamed (" + line.split(": streamed (", 1)[1].split(")", 1)[0] + ")"
    return "in memory"


def measure_baseline(scratch, name, data, examples):
    """The plain tf.data baseline over `data` in its own child."""
    result_path = os.path.join(scratch, "runs", f"baseline-{name}.json")
    os.makedirs(os.path.dirname(result_path), exist_ok=True)
    command = _child([sys.executable, os.path.abspath(__file__), f"--baseline_data={data}",
                      f"--baseline_examples={examples}", f"--result={result_path}"])
    before = machine.load_average()
    run = proc_tree.watch(command, log=result_path[:-5] + ".log", cwd=harness.ROOT)
    result = {"command": _shown(command), "load_before": before,
              "load_after": machine.load_average(), "wall_s": run["wall_s"],
              "peak_rss_gib": run["peak_rss_gib"], "max_rss_gib": run["max_rss_gib"],
              "cpu_s": run["cpu_s"]}
    if run["returncode"] != 0:
        result["error"] = _error_line(run["stderr_tail"])
    else:
        with open(result_path, encoding="utf-8") as f:
            result.update(json.load(f))
    return result


def baseline_child(data, examples, result_path):
    """TextLineDataset -> split -> batch 1024 -> keras-hub preprocessor; writes timings."""
    import tfimitate  # noqa: F401  (environment before TensorFlow)
    import tensorflow as tf
    from tfimitate.backbones import load_text_preprocessor

    preprocessor = load_text_preprocessor(BACKBONE, SEQUENCE_LENGTH)
    start, cpu_start = time.time(), time.process_time()
    files = tf.io.gfile.glob(data)
    lines = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TextLineDataset(path).skip(1), cycle_length=len(files),
        num_parallel_calls=tf.data.AUTOTUNE)

    def split(line):
        fields = tf.strings.split(line, "\t")
        return fields[0], tf.strings.to_number(fields[1], tf.int32)

    batches = (lines.repeat().map(split, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(BASELINE_BATCH)
               .map(lambda text, label: preprocessor(text, label),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    iterator = iter(batches)
    next(iterator)
    first, cpu_first = time.time(), time.process_time()
    count = 0
    while count < examples:
        count += int(next(iterator)[1].shape[0])
    end = time.time()
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"first_batch_s": round(first - start, 2),
                   "first_batch_cpu_s": round(cpu_first - cpu_start, 2),
                   "cpu_s_at_first_batch": round(cpu_first, 2),
                   "examples": count, "ex_per_s": round(count / (end - first), 1)}, f)


def data_description(data):
    files = sorted(glob.glob(data))
    return {"train_data": data, "files": len(files),
            "megabytes": round(sum(os.path.getsize(f) for f in files) / 1e6, 1)}


def ratios(rows, reference):
    """The issue's target ratios from the rows measured so far (None where a row is missing)."""
    def get(name, *keys):
        value = rows.get(name, {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    return {
        "peak_memory_4m_16_over_10k": ratio(get("4m_16", "train", "peak_rss_gib"),
                                            get("10k", "train", "peak_rss_gib")),
        "first_step_wall_4m_16_over_10k": ratio(get("4m_16", "train", "marks", "first_step", "wall_s"),
                                                get("10k", "train", "marks", "first_step", "wall_s")),
        "first_step_cpu_4m_16_over_10k": ratio(get("4m_16", "train", "marks", "first_step", "cpu_s"),
                                               get("10k", "train", "marks", "first_step", "cpu_s")),
        "steady_streamed_over_in_memory": ratio(get("4m_16", "steady", "steady_ex_per_s"),
                                                get(reference, "steady", "steady_ex_per_s")),
        "steady_1m_streamed_over_in_memory": ratio(get("1m", "steady", "steady_ex_per_s"),
                                                   get("1m_memory", "steady", "steady_ex_per_s")),
        "steady_per_cpu_streamed_over_in_memory": ratio(get("4m_16", "steady_cpu"),
                                                        get(reference, "steady_cpu")),
        "steady_per_cpu_1m_streamed_over_in_memory": ratio(get("1m", "steady_cpu"),
                                                           get("1m_memory", "steady_cpu")),
        "in_memory_reference": reference,
    }


TARGETS = (("peak_memory_4m_16_over_10k", "peak memory, 4 M rows in 16 shards / 10 k", "<=", 1.2),
           ("first_step_wall_4m_16_over_10k", "wall s to the first step, 4 M in 16 shards / 10 k",
            "<=", 1.5),
           ("first_step_cpu_4m_16_over_10k", "CPU s to the first step, 4 M in 16 shards / 10 k",
            "<=", 1.5),
           ("steady_streamed_over_in_memory", "steady examples/s, streamed (16 shards) / in memory",
            ">=", 0.95),
           ("steady_1m_streamed_over_in_memory",
            "steady examples/s, the 1 M-row file streamed / in memory", ">=", 0.95),
           ("steady_per_cpu_streamed_over_in_memory",
            "steady examples per CPU second, streamed (16 shards) / in memory", ">=", 0.95),
           ("steady_per_cpu_1m_streamed_over_in_memory",
            "steady examples per CPU second, the 1 M-row file streamed / in memory", ">=", 0.95))


def _cell(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(summary):
    rows, info = summary["rows"], summary["machine"]
    lines = [f"# Data at scale: text classification on {BACKBONE}, batch {BATCH}, "
             f"{summary['max_steps']} steps (throughput from {summary['steady_steps']})", "",
             machine.markdown(info, summary["load_before"], summary["load_after"]), "",
             f"`lscpu`: {summary['lscpu_model']}; avx512_bf16: "
             f"{'yes' if 'avx512_bf16' in info['vector_extensions'] else 'no'}, AMX: "
             f"{'yes' if 'amx_tile' in info['vector_extensions'] else 'no'}. `uptime` before: "
             f"{summary['uptime_before']}; after: {summary['uptime_after']}.", "",
             "Commands, in order (a later one re-measured some rows; each run keeps its own "
             "load figures in the JSON): " + "; ".join(f"`{c}`" for c in summary["commands"])
             + ". Method: benchmarks/data_scale.py's docstring.", "",
             "| rows | file(s) | peak memory GiB | CPU s to loop start | CPU s at first step "
             "| wall s to first step | CPU s at exit | steady ex/s | steady ex per CPU s "
             "| data path (log) | 1-min load before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        if name not in rows:
            continue
        row, train = rows[name], rows[name].get("train", {})
        what = (f"{row['data']['files']} × TSV, {row['data']['megabytes']:.0f} MB"
                + "".join(f" `{flag}`" for flag in row["data"].get("flags", ())))
        marks = train.get("marks", {})
        if "error" in train:
            lines.append(f"| {name} | {what} | {_cell(train.get('peak_rss_gib'), 2)} | "
                         f"failed: {train['error'].replace('|', '/')} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {what} | {_cell(train.get('peak_rss_gib'), 2)} | "
            f"{_cell(marks.get('loop_start', {}).get('cpu_s'))} | "
            f"{_cell(marks.get('first_step', {}).get('cpu_s'))} | "
            f"{_cell(marks.get('first_step', {}).get('wall_s'))} | {_cell(train.get('cpu_s'))} | "
            f"{_steady_cell(row)} | {_cell(row.get('steady_cpu'), 2)} | "
            f"{train.get('data_path', '–')} | {_loads(train)} |")
    lines += ["", f"Plain tf.data baseline (TextLineDataset → split → batch {BASELINE_BATCH} → "
              "keras-hub preprocessor, parallel map, prefetch):", "",
              "| rows | peak memory GiB | s to first batch | CPU s to first batch | "
              "tokenized ex/s | 1-min load before/after |", "|---|---|---|---|---|---|"]
    for name in DATASETS:
        base = rows.get(name, {}).get("baseline")
        if not base:
            continue
        if "error" in base:
            lines.append(f"| {name} | failed: {base['error'].replace('|', '/')} | | | | |")
            continue
        lines.append(f"| {name} | {_cell(base['peak_rss_gib'], 2)} | "
                     f"{_cell(base['first_batch_s'])} | {_cell(base['first_batch_cpu_s'])} | "
                     f"{base['ex_per_s']:,.0f} | {_loads(base)} |")
    target_ratios = summary["targets"]
    lines += ["", f"Targets (in-memory reference for throughput: the "
              f"{target_ratios['in_memory_reference']} run):", "",
              "| ratio | measured | target | met |", "|---|---|---|---|"]
    for key, text, sign, bound in TARGETS:
        value = target_ratios[key]
        met = "–" if value is None else ("yes" if (value <= bound if sign == "<=" else value >= bound)
                                         else "no")
        lines.append(f"| {text} | {_cell(value, 2)} | {sign} {bound} | {met} |")
    return "\n".join(lines) + "\n"


def _steady_cell(row):
    """The best steady examples/s, and every run's when there were several."""
    rates = [run["steady_ex_per_s"] for run in row.get("steady_runs", []) if "steady_ex_per_s" in run]
    best = row.get("steady", {}).get("steady_ex_per_s")
    return _cell(best) + (f" (runs: {', '.join(f'{r:.1f}' for r in rates)})" if len(rates) > 1 else "")


def _loads(run):
    return (f"{run['load_before'][0]:.1f} / {run['load_after'][0]:.1f}"
            if "load_before" in run else "–")


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _lscpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def main(argv):
    del argv
    if _BASELINE_DATA.value:
        baseline_child(_BASELINE_DATA.value, _BASELINE_EXAMPLES.value, _RESULT.value)
        return
    unknown = sorted(set(_DATASETS.value) - set(DATASETS))
    if unknown:
        raise app.UsageError(f"--datasets: unknown {unknown}; choose from {list(DATASETS)}")
    if 0 < _STEADY_STEPS.value <= WARMUP_STEPS:
        raise app.UsageError(f"--steady_steps must be 0 or more than {WARMUP_STEPS}")
    scratch = _SCRATCH.value
    names = [name for name in DATASETS if name in _DATASETS.value]
    summary = harness.load(NAME) or {"rows": {}}
    command = "python benchmarks/data_scale.py " + " ".join(sys.argv[1:])
    summary["commands"] = [c for c in summary.get("commands", []) if c != command] + [command]
    summary.update(machine=machine.describe(), lscpu_model=_lscpu_model(),
                   load_before=machine.load_average(), uptime_before=_uptime())
    if _MAX_STEPS.value:
        summary["max_steps"] = _MAX_STEPS.value
    if _STEADY_STEPS.value:
        summary["steady_steps"] = _STEADY_STEPS.value
    rows, data = summary["rows"], {}
    for name in names:
        started = time.time()
        data[name] = make_data(scratch, name)
        row = rows.setdefault(name, {})
        row["data"] = dict(data_description(data[name]), rows=DATASETS[name][0],
                           flags=DATASETS[name][2], generated_s=round(time.time() - started, 1))
        print(f"{name}: {row['data']}", flush=True)
        if _MAX_STEPS.value:
            row["train"] = measure_train(scratch, name, data[name], _MAX_STEPS.value)
            print(f"{name} train: {json.dumps(row['train'])}", flush=True)
        if _BASELINE_EXAMPLES.value and not DATASETS[name][2]:  # *_memory: same files
            row["baseline"] = measure_baseline(scratch, name, data[name], _BASELINE_EXAMPLES.value)
            print(f"{name} baseline: {json.dumps(row['baseline'])}", flush=True)
        _save(summary)
    steady = [name for name in names if "error" not in rows[name].get("train", {})]
    for name in steady if _STEADY_STEPS.value else ():
        rows[name]["steady_runs"] = []
    for _ in range(_STEADY_ROUNDS.value if _STEADY_STEPS.value else 0):
        for name in steady:  # round-robin: each row meets the machine's load alike
            runs = rows[name]["steady_runs"]
            runs.append(measure_train(scratch, name, data[name], _STEADY_STEPS.value))
            print(f"{name} steady: {runs[-1].get('steady_ex_per_s', runs[-1].get('error'))}",
                  flush=True)
            rows[name]["steady"] = max(runs, key=lambda run: run.get("steady_ex_per_s", 0))
            rows[name]["steady_cpu"] = max([run["steady_ex_per_cpu_s"] for run in runs
                                            if "steady_ex_per_cpu_s" in run], default=None)
            _save(summary)
    print(_save(summary))


def _save(summary):
    """Adds the load after and the target ratios, writes the JSON and markdown; the text."""
    summary.update(load_after=machine.load_average(), uptime_after=_uptime(),
                   targets=ratios(summary["rows"], _REFERENCE.value))
    text = markdown(summary)
    harness.save(NAME, summary, text)
    return text

def _parse(argv):
    """Parses the benchmark's flags, then absl's own (logging) from what is left."""
    return flags.FLAGS(_FLAGS(argv, known_only=True))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
