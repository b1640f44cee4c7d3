"""Tasks: each module holds one task's whole story (data, model, metrics, serving).

Every task module provides the same functions: `load_data`, `build_model`,
`make_preprocessor`, `train_dataset`, `evaluate`, `predict`, `serving_module`,
`parity_inputs`, `keras_outputs`.

Example:
    task = get_task("text_classification")
"""

import importlib

from tfimitate.errors import UserError

TASKS = {
    "text_classification": "tfimitate.tasks.text_classification",
    "token_classification": "tfimitate.tasks.token_classification",
}


def get_task(name):
    """The task module registered under `name`."""
    if name not in TASKS:
        raise UserError(f"--task={name} is unknown; choose one of {', '.join(sorted(TASKS))}.")
    return importlib.import_module(TASKS[name])
