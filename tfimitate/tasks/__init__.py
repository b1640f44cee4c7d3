"""Tasks: each one a class (tasks/base.py `Task`) in its own module, holding that task's
whole story (data, head, loss, metrics, serving).

The registry names each task's class by module path and class name; `task_class`
imports the class and checks it against the Task base (a missing method is a TypeError
here, not halfway through a run), `get_task` returns an instance. Task modules import
TensorFlow only inside what uses it, so importing this package, or a task class to read
its OPTIONS (config does), loads none. Adding a task is one module plus one line here.

Example:
    task = get_task("text_classification")    # a TextClassification
    task.validate(cfg)
    task_class("token_classification").OPTIONS  # (Option("tagging_scheme", ...),)
"""

import importlib

from tfimitate.errors import UserError

TASKS = {
    "text_classification": "tfimitate.tasks.text_classification:TextClassification",
    "token_classification": "tfimitate.tasks.token_classification:TokenClassification",
    "image_classification": "tfimitate.tasks.image_classification:ImageClassification",
    "multi_task": "tfimitate.tasks.multi_task:MultiTask",
    "text_regression": "tfimitate.tasks.text_regression:TextRegression",
    "image_regression": "tfimitate.tasks.image_regression:ImageRegression",
}


def task_class(name):
    """The task class registered under `name`, checked against tasks.base.Task."""
    if name not in TASKS:
        raise UserError(f"--task={name} is unknown; choose one of {', '.join(sorted(TASKS))}.")
    from tfimitate.tasks import base

    module, _, class_name = TASKS[name].partition(":")
    return base.check_task(getattr(importlib.import_module(module), class_name), name)


def get_task(name):
    """An instance of the task class registered under `name`."""
    return task_class(name)()
