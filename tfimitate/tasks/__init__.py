"""Tasks: each one a class (tasks/base.py `Task`) in its own module, holding that task's
whole story (data, head, loss, metrics, serving).

The registry names each task's class by module path and class name, so importing this
package loads no TensorFlow; `get_task` imports the class, checks it against the Task
base (a missing method is a TypeError here, not halfway through a run) and returns an
instance. Adding a task is one module plus one line here.

Example:
    task = get_task("text_classification")    # a TextClassification
    task.validate(cfg)
"""

import importlib

from tfimitate.errors import UserError

TASKS = {
    "text_classification": "tfimitate.tasks.text_classification:TextClassification",
    "token_classification": "tfimitate.tasks.token_classification:TokenClassification",
    "image_classification": "tfimitate.tasks.image_classification:ImageClassification",
    "multi_task": "tfimitate.tasks.multi_task:MultiTask",
}


def get_task(name):
    """An instance of the task class registered under `name`, checked against tasks.base.Task."""
    if name not in TASKS:
        raise UserError(f"--task={name} is unknown; choose one of {', '.join(sorted(TASKS))}.")
    from tfimitate.tasks import base

    module, _, class_name = TASKS[name].partition(":")
    return base.check_task(getattr(importlib.import_module(module), class_name), name)()
