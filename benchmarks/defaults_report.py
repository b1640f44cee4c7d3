"""The defaults benchmark's table: per data set the defaults score, its grid, and the targets.

A result is one finished run, keyed by its id `<data set>/<family>/<point>` (point
`defaults`, `plain_keras_hub`, or `lr=<rate>/freeze=<on|off>`), with `score` in percent
(held-out test accuracy; NER: entity F1). The three targets of issue 33:
- every data set: defaults within 1 point of the grid's best (defaults included);
- images: defaults >= the plain keras-hub script;
- LoRA: defaults within 2 points of full fine-tuning's defaults on the same data set.
A target whose runs have not all finished is `pending`.

Example:
    rows = table(results, DATASETS, {"text": 3, ...})  # [{"dataset": "sst2", "family": "text", "gap": 0.4, ...}]
    markdown(rows, results)          # the .md text
"""

GRID_TOLERANCE = 1.0
LORA_TOLERANCE = 2.0
FAMILY_NAMES = {"text": "text_classification (full fine-tuning)", "lora": "LoRA r=8",
                "head": "head only (--freeze=backbone)",
                "regression": "text_regression",
                "ner": "token_classification (NER)", "image": "image_classification"}


def verdict(ok):
    """'met', 'missed', or 'pending' (None: a run it needs has not finished)."""
    return "pending" if ok is None else ("met" if ok else "missed")


def _grid(results, dataset, family):
    prefix = f"{dataset}/{family}/lr="
    return {key[len(f"{dataset}/{family}/"):]: r["score"] for key, r in sorted(results.items())
            if key.startswith(prefix) and r.get("score") is not None}


def _score(results, key):
    result = results.get(key)
    return None if result is None else result.get("score")


def _grid_verdict(gap, done, size):
    """Missed as soon as a point beats the defaults by more than 1; met once all are in."""
    if gap is not None and gap > GRID_TOLERANCE:
        return "missed"
    if gap is None or done < size:
        return f"pending ({done}/{size} points)"
    return "met"


def table(results, datasets, grid_sizes):
    """One row per (data set, family) of `datasets` ({family: [data set, ...]});
    `grid_sizes`: {family: points in its grid}."""
    rows = []
    for family, names in datasets.items():
        for dataset in names:
            defaults = _score(results, f"{dataset}/{family}/defaults")
            grid = _grid(results, dataset, family)
            best_point, best = max(grid.items(), key=lambda item: item[1], default=(None, None))
            if defaults is not None and (best is None or defaults >= best):
                best_point, best = "defaults", defaults
            gap = None if defaults is None or best is None else round(best - defaults, 2)
            row = {"dataset": dataset, "family": family, "defaults": defaults,
                   "resolved": (results.get(f"{dataset}/{family}/defaults") or {}).get("resolved"),
                   "grid": grid, "grid_best": best, "grid_best_point": best_point, "gap": gap,
                   "targets": {"defaults within 1 pt of grid best": _grid_verdict(
                       gap, len(grid), grid_sizes[family])}}
            if family == "image":
                plain = _score(results, f"{dataset}/image/plain_keras_hub")
                row["plain_keras_hub"] = plain
                row["targets"]["defaults >= plain keras-hub script"] = verdict(
                    None if defaults is None or plain is None else defaults >= plain)
            if family == "lora":
                full = _score(results, f"{dataset}/text/defaults")
                row["full_fine_tuning_defaults"] = full
                row["targets"]["within 2 pts of full fine-tuning defaults"] = verdict(
                    None if defaults is None or full is None else defaults >= full - LORA_TOLERANCE)
            rows.append(row)
    return rows


def _pct(value):
    return "–" if value is None else f"{value:.1f}"


def markdown(rows, results, header=""):
    """The results file: the table, the targets, then every run with its command and load."""
    lines = [header, "", "| data set | family | defaults (resolved lr) | grid: lr / frozen phase -> score "
             "| grid best | gap (pts) | plain keras-hub | LoRA vs full FT | targets |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        resolved = row["resolved"] or {}
        rate = resolved.get("learning_rate")
        grid = "<br>".join(f"{point}: {_pct(score)}" for point, score in row["grid"].items()) or "–"
        extra_plain = _pct(row.get("plain_keras_hub")) if row["family"] == "image" else ""
        extra_lora = (f"full FT {_pct(row.get('full_fine_tuning_defaults'))}"
                      if row["family"] == "lora" else "")
        targets = "<br>".join(f"{name}: **{value}**" for name, value in row["targets"].items())
        best_point = f" ({row['grid_best_point']})" if row["grid_best_point"] else ""
        gap = "–" if row["gap"] is None else f"{row['gap']:.1f}"
        lines.append(f"| {row['dataset']} | {FAMILY_NAMES[row['family']]} | {_pct(row['defaults'])}"
                     f"{f' (lr {rate:g})' if rate else ''} | {grid} | {_pct(row['grid_best'])}"
                     f"{best_point} | {gap} | {extra_plain} | {extra_lora} | {targets} |")
    lines += ["", "Every run (score in %; load = 1-minute load average before / after the run):", "",
              "| run | score | steps | wall s | load before / after | commit | command |",
              "|---|---|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        before, after = r.get("load_before", ["?"]), r.get("load_after", ["?"])
        lines.append(f"| {key} | {_pct(r.get('score'))} | {r.get('steps', '')} | "
                     f"{r.get('wall_seconds', '')} | {before[0]} / {after[0]} | {r.get('commit', '')} | "
                     f"`{r.get('command', '')}` |")
    return "\n".join(lines) + "\n"
