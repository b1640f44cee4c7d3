"""The one exception type for mistakes a user can fix, and how entry points report it."""

import errno
import math
import re
import sys


class UserError(Exception):
    """A problem with the user's flags, files or data, told in one sentence.

    Example:
        raise UserError("--train_data: file data/train.csv does not exist; check the path.")
    """


def run_cli(main, argv=None):
    """Runs an absl `main`: any flag or UserError becomes one `error:` line on stderr, exit 2.

    Example:
        if __name__ == "__main__":
            run_cli(main)
    """
    from absl import app

    def guarded(args):
        try:
            return main(args)
        except UserError as error:
            _fail(error)
        except Exception as error:  # OSError, or TensorFlow's OpError for the same
            if not disk_full(error):
                raise
            where = getattr(error, "filename", None)
            detail = f"writing {where}" if where else " ".join(str(error).split())[:200]
            _fail(UserError(f"the disk is full ({detail}); free some space and re-run: files "
                            "are written whole or not at all, and training resumes from its "
                            "last complete checkpoint."))

    app.run(guarded, argv=argv, flags_parser=_parse_flags)


def disk_full(error):
    """True if `error` (an OSError, or a TensorFlow error saying so) is a full disk or quota."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in ("No space left on device", "Disk quota exceeded"))


def _fail(error):
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_flags(argv):
    """app.run's flag parser: one `error:` line and exit 2 instead of absl's
    `FATAL Flags parsing error` and exit 1."""
    try:
        return parse_flags(argv)
    except UserError as error:
        _fail(error)


def parse_flags(argv):
    """Parses `argv` into absl's FLAGS and returns the arguments left; raises UserError for
    bytes that are not UTF-8, a flag absl refuses (unknown, malformed, out of range,
    required, missing --flagfile), a quoted value in a flagfile, or a nan/inf float flag.

    Example:
        parse_flags(["train", "--learning_rate=nan"])  # UserError: --learning_rate=nan: ...
    """
    from absl import flags

    for i, arg in enumerate(argv[1:], start=1):
        if any("\udc80" <= c <= "\udcff" for c in arg):  # undecodable bytes (surrogateescape)
            raw = arg.encode("utf-8", "surrogateescape")
            raise UserError(f"command-line argument {i} ({raw!r}) is not valid UTF-8; retype it "
                            "or set the terminal's encoding to UTF-8.")
    try:
        _refuse_quoted_flagfile_values(argv[1:])
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        raise UserError(_sentence(error)) from None
    except UnicodeDecodeError as error:
        raise UserError(f"a --flagfile holds bytes that are not valid UTF-8 ({error.reason} at "
                        f"byte {error.start}); re-save it as UTF-8.") from None
    for name in flags.FLAGS:
        value = flags.FLAGS[name].value
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name}={value}: give a finite number.")
    return remaining


def _refuse_quoted_flagfile_values(args):
    """absl keeps quotes in flagfile values (`--model_dir="runs/x"` names a directory `"runs/x"`),
    unlike a shell: refuse such values instead of guessing."""
    from absl import flags

    given = set(args)
    for arg in flags.FLAGS.read_flags_from_files(args, force_gnu=False):
        name, equals, value = arg.partition("=")
        if (arg not in given and equals and len(value) >= 2 and value[0] == value[-1]
                and value[0] in "'\""):
            raise UserError(f"{arg}: a --flagfile takes values literally, so the quotes would "
                            f"become part of the value; write {name}={value[1:-1]}.")


def _sentence(error):
    """absl's flag error text as one sentence that says what to do."""
    message = " ".join(str(error).split())
    message = re.sub(r"^(flag |ERROR:: )", "", message)
    missing = re.match(r"Unable to open flagfile: \[Errno \d+\] (.*): '(.*)'$", message)
    if missing:
        return f"--flagfile={missing.group(2)}: {missing.group(1)}; check the path."
    required = re.match(r"--(\w+)=None: Flag --\w+ must have a value other than None", message)
    if required:
        return f"--{required.group(1)} is required; give it on the command line or in the --flagfile."
    return f"{message.rstrip('.')}; see --helpfull for the flags and their values."
