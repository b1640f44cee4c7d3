"""A search space file: which training flags a search varies, and over what.

One flag per line, `#` comments and blank lines ignored:

    --learning_rate=log_uniform(1e-5,1e-4)   # float flags: uniform(a,b), log_uniform(a,b)
    --dropout=uniform(0,0.3)
    --epochs=int_range(1,3)                  # integer flags: a..b inclusive
    --batch_size=choice(16,32)               # any flag: listed values
    --augment=choice(|word_dropout:0.1,swap:0.1)  # values with commas: separate by |

Any flag of `tfimitate.train` (techniques too) except --model_dir, --export_dir and
--cv_fold can be searched; every value is read as a flagfile value of its field
(config.parse_value: its type, bounds and choices).

Example:
    dimensions = read("configs/search/sst2.cfg")
    for dimension in dimensions:
        dimension.declare(hp)                 # a keras_tuner.HyperParameters
    cfg = base_cfg.replace(**overrides(dimensions, hp.values))
"""

import dataclasses
import math
import re
from typing import Tuple

from tfimitate import config, files
from tfimitate.data import readers
from tfimitate.errors import UserError

KINDS = ("choice", "uniform", "log_uniform", "int_range")
NOT_SEARCHABLE = ("model_dir", "export_dir", "cv_fold")
_LINE = re.compile(r"--(\w+)=(\w+)\((.*)\)$")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched flag: `kind` (one of KINDS) over `values` (bounds, or the choices)."""

    flag: str
    kind: str
    values: Tuple
    where: str  # file:line, for messages

    def declare(self, hp):
        """Adds this dimension to keras_tuner HyperParameters `hp`."""
        if self.kind == "choice":
            hp.Choice(self.flag, list(self.values))
        elif self.kind == "int_range":
            hp.Int(self.flag, self.values[0], self.values[1])
        else:
            hp.Float(self.flag, self.values[0], self.values[1],
                     sampling="log" if self.kind == "log_uniform" else "linear")


def read(path):
    """The Dimensions of search space file `path`; UserError (naming file:line) for a line
    that is not `--flag=kind(args)`, a flag train does not have, or a value its flag refuses."""
    files.check_readable_file(path, "--search_space")
    lines = readers.decode_utf8(files.read_bytes(path), f"--search_space={path}",
                                "save it as UTF-8.").splitlines()
    dimensions = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            dimensions.append(_parse(text, f"{path}:{number}"))
    flags = [dimension.flag for dimension in dimensions]
    if not flags:
        raise UserError(f"--search_space={path} lists no flag to search; add lines like "
                        "--learning_rate=log_uniform(1e-5,1e-4).")
    repeated = sorted({flag for flag in flags if flags.count(flag) > 1})
    if repeated:
        raise UserError(f"--search_space={path} lists --{repeated[0]} twice; keep one line.")
    return dimensions


def overrides(dimensions, values):
    """Experiment field values of one trial from keras-tuner's `values` (name -> value)."""
    return {d.flag: config.parse_value(d.flag, values[d.flag], d.where) if d.kind == "choice"
            and isinstance(values[d.flag], str) else values[d.flag] for d in dimensions}


def _parse(text, where):
    match = _LINE.match(text)
    if not match or match.group(2) not in KINDS:
        raise UserError(f"{where}: '{text}' is not a search range; write --flag=KIND(ARGS) with "
                        f"KIND one of {', '.join(KINDS)}, e.g. --learning_rate=log_uniform(1e-5,1e-4).")
    flag, kind, args = match.groups()
    if flag not in config.field_types() or flag in NOT_SEARCHABLE:
        raise UserError(f"{where}: --{flag} is not a flag tfimitate.train can search; see "
                        "--helpfull for the training flags.")
    parts = args.split("|") if "|" in args else args.split(",")
    if kind == "choice":
        values = tuple(_choice_value(flag, part.strip(), where) for part in parts)
        if len(set(values)) < len(values) or len(values) < 1:
            raise UserError(f"{where}: choice({args}) lists a value twice; list each once.")
        return Dimension(flag, kind, values, where)
    wanted = int if kind == "int_range" else float
    if len(parts) != 2:
        raise UserError(f"{where}: {kind}({args}) needs two bounds, e.g. {kind}(1,3).")
    bounds = tuple(_bound(flag, part.strip(), wanted, kind, where) for part in parts)
    if not bounds[0] < bounds[1] or (kind == "log_uniform" and bounds[0] <= 0):
        need = "0 < low < high" if kind == "log_uniform" else "low < high"
        raise UserError(f"{where}: {kind}({args}) is an empty range; give {need}.")
    return Dimension(flag, kind, bounds, where)


def _choice_value(flag, text, where):
    """A number for numeric and boolean flags (searchable in order), else the flag text."""
    value = config.parse_value(flag, text, where)
    return value if isinstance(value, (bool, int, float)) else text


def _bound(flag, text, wanted, kind, where):
    value = config.parse_value(flag, text, where)
    if isinstance(value, bool) or not isinstance(value, wanted):
        suggestion = "int_range" if isinstance(value, int) and not isinstance(value, bool) \
            else "choice"
        raise UserError(f"{where}: --{flag} does not take {kind} values; use {suggestion}(...).")
    if not math.isfinite(value):
        raise UserError(f"{where}: {kind} bounds must be finite numbers, not {text}.")
    return wanted(value)
