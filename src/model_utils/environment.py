"""The Python environment a script runs in: the user's own, with the MindSpore build that matches
their device (the scripts in scripts/ never install one). `environment_line` is the first line
those scripts print and log, so that a log says which MindSpore and device produced it.
"""
import sys

from src.model_utils.errors import UserError

INSTALL_HINT = ("install it with `pip install -r requirements.txt` (CPU), or on Ascend or GPU the "
                "MindSpore build for your CANN or CUDA (README: Running on Ascend or GPU); the "
                "variable PYTHON chooses another interpreter")


def mindspore_version():
    """The version of the MindSpore this interpreter imports; UserError when it cannot."""
    try:
        import mindspore
    # Not only ImportError: a build for another CUDA/CANN fails with OSError or RuntimeError.
    except Exception as err:  # pylint: disable=broad-except
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"MindSpore cannot be imported by {sys.executable} ({reason}); "
                        f"{INSTALL_HINT}") from None
    return mindspore.__version__


def environment_line(device_target):
    """'MindSpore <version>, device_target <target>, python <interpreter>'."""
    return f"MindSpore {mindspore_version()}, device_target {device_target}, python {sys.executable}"
