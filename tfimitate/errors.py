"""The one exception type for mistakes a user can fix, and how entry points report it."""

import sys


class UserError(Exception):
    """A problem with the user's flags, files or data, told in one sentence.

    Example:
        raise UserError("--train_data: file data/train.csv does not exist; check the path.")
    """


def run_cli(main, argv=None):
    """Runs an absl `main`, turning a UserError into one line on stderr and exit code 2.

    Example:
        if __name__ == "__main__":
            run_cli(main)
    """
    from absl import app

    def guarded(args):
        try:
            return main(args)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(guarded, argv=argv)
