"""Evaluation figures.

Example:
    plot_confusion_matrix([[5, 1], [2, 7]], ["neg", "pos"], "eval/cm.png", "dev.tsv, step 600")
"""

import io

from tfimitate.files import write_atomically


def plot_confusion_matrix(matrix, labels, path, title):
    """Saves the confusion matrix (rows: true labels, columns: predicted) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    plt.close(figure)
    write_atomically(path, png.getvalue())
