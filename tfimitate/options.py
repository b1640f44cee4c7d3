"""Options, declared once by their owner; absl flags and config.Experiment are made from them.

The core (config.py `CORE_OPTIONS`), each task class (its `OPTIONS` class attribute),
each technique module (its module-level `OPTIONS`) and the entry points (flags.py
`CLI_OPTIONS`) declare their options as a tuple of `Option`s (name, default, help,
bounds). The command-line flags are generated from them (`define_flags`), and so are the
fields of the frozen `config.Experiment` (same flat names), so a default lives in one
place. No TensorFlow here: a flag mistake is answered in about a second.

Example (tfimitate/techniques/lora.py):
    OPTIONS = (
        options.integer("lora_rank", 0, "Rank of the LoRA adapters; 0: off.", lower=0),
        options.names("lora_targets", ("query", "value"), "Dense layers that get adapters."),
    )
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

KINDS = ("string", "integer", "float", "bool", "enum", "list")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: `kind` is string, integer, float, bool, enum (one of `choices`) or list
    (comma-separated names, a tuple in the Experiment); `lower`/`upper` bound numbers;
    `data` marks a data input (a path or `tfds:` spec) that training checks exists
    before TensorFlow is imported (config.check_inputs_exist)."""

    name: str
    default: Any
    help: str
    kind: str = "string"
    choices: Tuple[str, ...] = ()
    lower: Any = None
    upper: Any = None
    data: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def annotation(self):
        """The Experiment field's type."""
        base = {"string": str, "integer": int, "float": float, "bool": bool, "enum": str,
                "list": Tuple[str, ...]}[self.kind]
        return Optional[base] if self.default is None else base

    def problem(self, value):
        """Why `value` is out of bounds or not a choice (e.g. "it must be at least 1"), or None."""
        if value is None:
            return None
        if self.kind == "enum" and value not in self.choices:
            return f"it must be one of {', '.join(self.choices)}"
        if self.lower is not None and value < self.lower:
            return f"it must be at least {self.lower}"
        if self.upper is not None and value > self.upper:
            return f"it must be at most {self.upper}"
        return None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A task's or technique's default for `option` where the user left it unset:
    `value`, because of `reason` (logged, and kept in experiment.json). The entry steps
    aside when the user set any option of `unless` (a related choice of theirs, e.g. their
    own frozen phase), and applies only where `when(cfg)` holds, if given (one value of an
    option, say). See tfimitate/recipes.py.

    Example:
        Recipe("learning_rate", 1e-3, "a new head on a frozen backbone learns at a head's rate",
               when=lambda cfg: "backbone" in (cfg.freeze or ()))
    """

    option: str
    value: Any
    reason: str
    unless: Tuple[str, ...] = ()
    when: Optional[Callable[[Any], bool]] = None


def string(name, default, help):
    return Option(name, default, help)


def data(name, help):
    """A data input (path or `tfds:` spec, unset by default), checked to exist before
    training loads TensorFlow."""
    return Option(name, None, help, data=True)


def integer(name, default, help, lower=None, upper=None):
    return Option(name, default, help, "integer", lower=lower, upper=upper)


def number(name, default, help, lower=None, upper=None):
    return Option(name, default, help, "float", lower=lower, upper=upper)


def boolean(name, default, help):
    return Option(name, default, help, "bool")


def choice(name, default, choices, help):
    return Option(name, default, help, "enum", choices=tuple(choices))


def names(name, default, help):
    return Option(name, None if default is None else tuple(default), help, "list")


def merge(*groups, owners=None):
    """One tuple of the options of `groups`, in order. A name declared twice is a bug of
    its owners (`owners`: one name per group, for the message); the same declaration met
    twice (a task class inheriting its parent's OPTIONS) counts once.

    Example:
        merge(CORE_OPTIONS, TextClassification.OPTIONS, owners=["core", "task text_classification"])
    """
    found, owner_of = {}, {}
    for index, group in enumerate(groups):
        for option in group:
            if option.name in found:
                if found[option.name] is option:
                    continue
                by = f" (by {owner_of[option.name]} and {owners[index]})" if owners else ""
                raise ValueError(f"option --{option.name} is declared twice{by}")
            found[option.name] = option
            owner_of[option.name] = owners[index] if owners else None
    return tuple(found.values())


def define_flags(options, flag_values=None):
    """Defines one absl flag per option; returns {name: FlagHolder}."""
    from absl import flags

    flag_values = flag_values or flags.FLAGS
    holders = {}
    for option in options:
        common = dict(name=option.name, help=option.help, flag_values=flag_values)
        default = list(option.default) if option.kind == "list" and option.default else option.default
        if option.kind == "string":
            holders[option.name] = flags.DEFINE_string(default=default, **common)
        elif option.kind == "integer":
            holders[option.name] = flags.DEFINE_integer(
                default=default, lower_bound=option.lower, upper_bound=option.upper, **common)
        elif option.kind == "float":
            holders[option.name] = flags.DEFINE_float(
                default=default, lower_bound=option.lower, upper_bound=option.upper, **common)
        elif option.kind == "bool":
            holders[option.name] = flags.DEFINE_bool(default=default, **common)
        elif option.kind == "enum":
            holders[option.name] = flags.DEFINE_enum(
                default=default, enum_values=list(option.choices), **common)
        else:
            holders[option.name] = flags.DEFINE_list(default=default, **common)
    return holders
