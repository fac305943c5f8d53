"""Writing outputs under a temporary name and renaming them into place.

A run killed at any moment (even by SIGKILL) then leaves either the previous complete file or the
new complete file under the real name, never a partial one.
"""
import contextlib
import glob
import json
import os
import tempfile

TEMPORARY_PREFIX = ".tmp-"

def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to `path`; rename it to `path` when the block succeeds.

    The temporary name keeps the extension of `path` (some writers, such as MindSpore's
    `save_checkpoint`, add one otherwise). On an exception the temporary file is removed, with
    what a writer made of its name (MindSpore's `save_checkpoint` first writes `<stem>.tmp`), and
    an OSError that names no file (a write on a full disk) is raised again naming `path`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=os.path.splitext(path)[1],
                                   dir=directory)
    except OSError as err:          # name the file asked for, not a temporary name
        raise OSError(err.errno, err.strerror, path) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        stem = os.path.splitext(tmp)[0]
        for made in [tmp] + glob.glob(glob.escape(stem) + ".*"):
            if os.path.isfile(made):
                os.remove(made)
        if isinstance(err, OSError) and err.filename is None and err.errno:
            raise OSError(err.errno, os.strerror(err.errno), path) from None
        raise


def remove_leftovers(directory):
    """Delete the temporary files that writes killed mid-way left in `directory`.

    That is every file named `.tmp-*`: those of `atomic_output`, and the `.tmp-*.tmp` that
    MindSpore's `save_checkpoint` writes before renaming it to the temporary `.ckpt` name.
    Call it only where no other process is writing into `directory`.
    """
    for path in glob.glob(os.path.join(glob.escape(directory), TEMPORARY_PREFIX + "*")):
        if os.path.isfile(path):
            os.remove(path)


def write_text(path, text):
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, obj, indent=2):
    """Write `obj` as JSON (indented by `indent`; None: one line) atomically."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_yaml(path, mapping):
    """Write a mapping as YAML (safe_dump, keys in the given order) atomically."""
    # Imported here: separating with an ONNX model needs no YAML (src/deploy/onnx_runtime.py).
    import yaml
    write_text(path, yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True))
