"""User errors and the wrapper that turns them into one-line messages.

A `UserError` is raised for anything the user can fix (a missing file, a bad value, a checkpoint of
another configuration). Entry points run through `run_main`, which prints such an error as one
line on stderr and exits with status 2, without a traceback. Any other exception is a bug and keeps
its traceback.
"""
import sys


class UserError(Exception):
    """An error in what the user gave: the message names the file or key and what was expected."""


def run_main(main, *args, **kwargs):
    """Call `main(*args, **kwargs)`; print a `UserError` as one line and exit 2."""
    try:
        return main(*args, **kwargs)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
