"""User errors and the wrapper that turns them into one-line messages.

A `UserError` is raised for anything the user can fix (a missing file, a bad value, a checkpoint of
another configuration). Entry points run through `run_main`, which prints such an error as one
line on stderr and exits with status 2, without a traceback. A failure of the file system (an
output folder that is a file, read-only, under /proc, or full) is an OSError naming the file: it is
printed the same way, with status 1. Any other exception is a bug and keeps its traceback.
"""
import errno
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
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def os_error_line(err):
    """'<file>: <cause>' for an OSError, e.g. "out/model.ckpt: No space left on device"."""
    cause = err.strerror or str(err) or type(err).__name__
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        cause = f"a file stands where a folder is needed ({cause})"
    names = [str(name) for name in (err.filename, err.filename2) if name is not None]
    return f"{' -> '.join(names) or 'output'}: {cause}"
