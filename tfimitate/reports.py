"""Evaluation figures: a confusion matrix, and a run's training curves from TensorBoard.

Example:
    plot_confusion_matrix([[5, 1], [2, 7]], ["neg", "pos"], "eval/cm.png", "dev.tsv, step 600")
    plot_curves("runs/sst2/logs/train", "runs/sst2/eval/curves.png")
    figure, axes = pyplot().subplots()   # any figure, saved like these: save_png(figure, path)
"""

import io
import os

from tfimitate.files import write_atomically


def pyplot():
    """matplotlib.pyplot drawing off-screen (the Agg backend): no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path):
    """Lays out `figure`, saves it as a PNG at `path` (atomically) and closes it."""
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    pyplot().close(figure)
    write_atomically(path, png.getvalue())


def plot_confusion_matrix(matrix, labels, path, title):
    """Saves the confusion matrix (rows: true labels, columns: predicted) as a PNG, atomically."""
    plt = pyplot()

    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center",
                      color="white" if count > peak / 2 else "black")
    save_png(figure, path)


def read_scalars(log_dir, tags):
    """{tag: ([steps], [values])} of TensorBoard scalars in `log_dir` (every event file; a
    step logged twice, as after a resume, keeps its newest value).

    Example:
        read_scalars("runs/sst2/logs/train", ["loss", "eval/score"])["loss"]  # ([1, 2], [0.7, 0.6])
    """
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    available = set()
    if os.path.isdir(log_dir):
        events = event_accumulator.EventAccumulator(log_dir, size_guidance={
            event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
        events.Reload()
        available = set(events.Tags()["tensors"])
    series = {}
    for tag in tags:
        newest = {}
        for event in sorted(events.Tensors(tag) if tag in available else [],
                            key=lambda e: e.wall_time):
            newest[event.step] = float(tensor_util.make_ndarray(event.tensor_proto))
        steps = sorted(newest)
        series[tag] = (steps, [newest[step] for step in steps])
    return series


def plot_curves(log_dir, path):
    """Saves the training loss and the eval score over steps, read from the run's
    TensorBoard logs, as a PNG (atomically).

    Example:
        plot_curves("runs/sst2/logs/train", "runs/sst2/eval/curves.png")
    """
    plt = pyplot()

    series = read_scalars(log_dir, ["loss", "eval/score"])
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for axes, tag, title, style in ((loss_axes, "loss", "training loss", "-"),
                                    (score_axes, "eval/score", "eval score", "o-")):
        axes.plot(*series[tag], style)
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    save_png(figure, path)
