"""Tasks: each module holds one task's whole story (data, head, loss, metrics, serving).

Every task module satisfies the Task protocol of `tasks/base.py`; `get_task`
checks it before the task is used. Adding a task is one module plus one line here.

Example:
    task = get_task("text_classification")
"""

import importlib

from tfimitate.errors import UserError

TASKS = {
    "text_classification": "tfimitate.tasks.text_classification",
    "token_classification": "tfimitate.tasks.token_classification",
    "image_classification": "tfimitate.tasks.image_classification",
    "multi_task": "tfimitate.tasks.multi_task",
}


def get_task(name):
    """The task module registered under `name`, checked against the Task protocol."""
    if name not in TASKS:
        raise UserError(f"--task={name} is unknown; choose one of {', '.join(sorted(TASKS))}.")
    from tfimitate.tasks import base

    return base.check_task(importlib.import_module(TASKS[name]), name)
