"""MindSpore's C++ log at errors only, unless the user asked for more. Imported first by every
entry point: GLOG_v is read once, when mindspore is imported.

Without it a plain `python train.py` prints C++ warnings about the graph compiler's internals on
every run (for example "Some side effect nodes were eliminated by mistake") that say nothing the
user can act on. `GLOG_v=2 python train.py` (warnings) or `GLOG_v=1` (info) brings them back; a
value already in the environment is always kept.
"""
import os

QUIET_LEVEL = "3"   # GLOG levels: 0 debug, 1 info, 2 warning, 3 error

os.environ.setdefault("GLOG_v", QUIET_LEVEL)
