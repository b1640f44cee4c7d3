"""What a search found: results.csv, a markdown table, best.cfg and a figure, in the tune_dir.

Example:
    rows = collect(tuner)                 # one dict per trial, in trial order
    print(write(tuner, rows))             # results.csv, best.cfg, results.png; the markdown
"""

import csv
import io
import math
import os

import numpy as np

from tfimitate import files, reports
from tfimitate.search import trials

BEST_DIR = "best"


def collect(tuner):
    """One row per trial: trial id, status, searched flag values, score, steps, seconds."""
    rows = []
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        cfg = tuner.trial_config(trial)
        flags = {d.flag: getattr(cfg, d.flag) for d in tuner.dimensions}
        if tuner.step_unit:
            flags["max_steps"] = cfg.max_steps
        result = trials.read_result(tuner.trial_dir(trial_id))
        rows.append(dict(trial=trial_id, status=trial.status, **flags,
                         score=result.get("score"), steps=result.get("steps"),
                         seconds=result.get("seconds")))
    return rows


def write(tuner, rows):
    """Writes results.csv, best.cfg (the best trial's flags, training into <tune_dir>/best)
    and results.png; returns the markdown summary."""
    columns = list(rows[0]) if rows else ["trial", "status", "score", "steps", "seconds"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows([{k: _show(v) for k, v in row.items()} for row in rows])
    files.write_atomically(os.path.join(tuner.tune_dir, "results.csv"), table.getvalue())
    scored = [row for row in rows if row["score"] is not None]
    summary = markdown(rows)
    if scored:
        best = max(scored, key=lambda row: row["score"])
        cfg = tuner.trial_config(tuner.oracle.trials[best["trial"]])
        cfg = cfg.replace(model_dir=os.path.join(tuner.tune_dir, BEST_DIR),
                          export_dir=None if cfg.cv_folds else tuner.base_cfg.export_dir)
        best_cfg = files.write_atomically(os.path.join(tuner.tune_dir, "best.cfg"),
                                          cfg.flagfile())
        names = [name for name in columns if name not in ("trial", "status", "score", "steps",
                                                          "seconds")]
        flag = most_important(scored, names)
        plot(scored, flag, os.path.join(tuner.tune_dir, "results.png"))
        summary += (f"\nBest: trial {best['trial']}, score {best['score']:.4f}; most important "
                    f"flag: --{flag}. Reproduce it with: python -m tfimitate.train "
                    f"--flagfile={best_cfg}")
    return summary


def markdown(rows):
    """The rows as a markdown table (best score in bold)."""
    if not rows:
        return "No trials yet."
    columns = list(rows[0])
    best = max((row["score"] for row in rows if row["score"] is not None), default=None)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_show(row[name]) for name in columns]
        if best is not None and row["score"] == best:
            cells[columns.index("score")] = f"**{cells[columns.index('score')]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def most_important(rows, names):
    """The searched flag whose values go with the score the most: |correlation| of the score
    with a numeric flag (its log for positive values spanning 10x), the correlation ratio
    for other flags.

    Example:
        most_important([{"lr": 1e-5, "score": .6}, {"lr": 1e-4, "score": .8}], ["lr"])  # "lr"
    """
    scores = np.array([row["score"] for row in rows], dtype=float)

    def strength(name):
        values = [row[name] for row in rows]
        if len(set(map(str, values))) < 2 or scores.std() == 0:
            return 0.0
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            x = np.array(values, dtype=float)
            if x.min() > 0 and x.max() >= 10 * x.min():
                x = np.log(x)
            return abs(float(np.corrcoef(x, scores)[0, 1]))
        groups = {}
        for value, score in zip(map(str, values), scores):
            groups.setdefault(value, []).append(score)
        between = sum(len(g) * (np.mean(g) - scores.mean()) ** 2 for g in groups.values())
        return math.sqrt(between / (((scores - scores.mean()) ** 2).sum()))

    return max(names, key=strength)


def plot(rows, flag, path):
    """Saves a PNG: the score of each trial, and the score against `flag`."""
    plt = reports.pyplot()

    figure, (per_trial, against) = plt.subplots(1, 2, figsize=(10, 4))
    per_trial.plot(range(len(rows)), [row["score"] for row in rows], "o")  # not bars from 0: differences show
    per_trial.set_xticks(range(len(rows)), [row["trial"] for row in rows])
    per_trial.set_xlabel("trial")
    per_trial.set_ylabel("score")
    per_trial.set_title("score per trial")
    values = [row[flag] for row in rows]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        against.scatter(values, [row["score"] for row in rows])
    else:
        names = sorted({_show(v) for v in values})
        against.scatter([names.index(_show(v)) for v in values], [row["score"] for row in rows])
        against.set_xticks(range(len(names)), names)
    if numeric and min(values) > 0 and max(values) >= 10 * min(values):
        against.set_xscale("log")
    elif numeric:
        against.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    against.set_xlabel(f"--{flag}")
    against.set_title(f"score vs --{flag}")
    reports.save_png(figure, path)


def _show(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "" if value is None else str(value)
