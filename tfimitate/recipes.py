"""Recipes: the defaults a task or a technique chooses for options the user left unset.

A task class (its `RECIPE` class attribute) and a technique module (its module-level
`RECIPE`, used when the flags choose the technique) may declare `options.Recipe` entries:
an option, the value it takes there, and why. `apply` gives every option of an Experiment
its value by precedence, command line > flagfile > technique recipe > task recipe > plain
default, and records where each value came from in `Experiment.option_sources` (written to
experiment.json): {"from": "default" | "recipe" | "flagfile" | "command line"}, with the
recipe's "reason". An entry steps aside when an option in its `unless` was set, and
applies only where its `when(cfg)` holds. A run that is resumed keeps the recipe values it
recorded (`recorded`), whatever today's recipes say.
No TensorFlow here: a recipe is settled in about a second, before any work.

Example:
    cfg = apply(Experiment(task="image_classification", train_data="pets/"), explicit={})
    cfg.learning_rate                        # 0.003
    cfg.option_sources["learning_rate"]      # {"from": "recipe", "reason": "image_classification: ..."}
    chosen_lines(cfg)                        # ["learning_rate=0.003 (image_classification: ...)", ...]
"""

import dataclasses

from tfimitate import techniques
from tfimitate.tasks import TASKS, task_class

DEFAULT, RECIPE, FLAGFILE, COMMAND_LINE = "default", "recipe", "flagfile", "command line"


def declared():
    """(owner, its recipe entries, applies(cfg) -> bool) for every registered task class and
    technique module: the tasks first, then the techniques (a technique's entry wins).

    Example:
        [owner for owner, _, _ in declared()]   # ["image_classification", ..., "lora"]
    """
    for name in TASKS:
        yield name, task_class(name).RECIPE, lambda cfg, name=name: cfg.task == name
    for name in techniques.TECHNIQUES:
        module = techniques.module(name)
        yield name, getattr(module, "RECIPE", ()), \
            lambda cfg, module=module: module.from_config(cfg) is not None


def owners_of(option_name):
    """The owners whose recipes may set `option_name`, with the value: ["lora (0.005)"]."""
    return [f"{owner} ({_show(entry.value)})"
            for owner, entries, _ in declared() for entry in entries if entry.option == option_name]


def noted(options):
    """`options` with a note in the help of each one a recipe may change, e.g. "(A recipe
    may change this default: image_classification (0.003), lora (0.005).)": what
    --helpfull shows beside the plain default."""
    noted_options = []
    for option in options:
        owners = owners_of(option.name)
        if owners:
            option = dataclasses.replace(option, help=f"{option.help} (A recipe may change this "
                                                      f"default: {', '.join(owners)}.)")
        noted_options.append(option)
    return tuple(noted_options)


def apply(cfg, explicit, recorded=None):
    """`cfg` with the recipes' values for the options not in `explicit`, and its
    option_sources. `explicit`: {option name: FLAGFILE or COMMAND_LINE} for the options the
    user set. `recorded`: the Experiment of the run being resumed (its recipe values are
    kept, no new recipe is applied), or None for a new run.

    Example:
        apply(cfg, {"learning_rate": COMMAND_LINE})   # the user's rate stays
    """
    sources = {field.name: {"from": explicit.get(field.name, DEFAULT)}
               for field in dataclasses.fields(cfg) if field.name != "option_sources"}
    chosen = _recorded(recorded, explicit) if recorded is not None else _chosen(cfg, explicit)
    for name, (value, reason) in chosen.items():
        sources[name] = {"from": RECIPE, "reason": reason}
    return cfg.replace(**{name: value for name, (value, _) in chosen.items()},
                       option_sources=sources)


def _chosen(cfg, explicit):
    """{option: (value, reason)} of the recipes that apply to `cfg`, a later owner winning."""
    chosen = {}
    for owner, entries, applies in declared():
        if not entries or not applies(cfg):
            continue
        for entry in entries:
            if (entry.option in explicit or any(name in explicit for name in entry.unless)
                    or (entry.when is not None and not entry.when(cfg))):
                continue
            chosen[entry.option] = (entry.value, f"{owner}: {entry.reason}")
        # A technique's recipe sees the task's choices (e.g. a frozen phase it builds on).
        cfg = cfg.replace(**{name: value for name, (value, _) in chosen.items()})
    return chosen


def _recorded(recorded, explicit):
    """The recipe values the resumed run `recorded` (none for runs from before recipes)."""
    return {name: (getattr(recorded, name), f"{source['reason']} (recorded by the run)")
            for name, source in (recorded.option_sources or {}).items()
            if source.get("from") == RECIPE and name not in explicit}


def chosen_lines(cfg):
    """One line per option a recipe set: "learning_rate=0.005 (lora: LoRA adapters start ...)"."""
    return [f"{name}={_show(getattr(cfg, name))} ({source['reason']})"
            for name, source in (cfg.option_sources or {}).items()
            if source["from"] == RECIPE]


def _show(value):
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(value) if isinstance(value, tuple) else str(value)
