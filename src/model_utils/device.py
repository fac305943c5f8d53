"""Device and execution-mode set-up shared by every entry point."""
import os

import mindspore as ms

from src.model import cpu_kernels
from src.model_utils.errors import UserError


def init_device(cfg, mode=ms.GRAPH_MODE):
    """Select `cfg.device_target` (and `cfg.device_id` outside a launcher) and the execution mode.

    Raises UserError when this machine has no such device, instead of MindSpore's C++ stack.
    """
    target = cfg.device_target
    if not ms.hal.is_available(target):
        raise UserError(f"device_target: {target} is not available on this machine "
                        f"(this MindSpore build has {', '.join(available_devices()) or 'none'})")
    launched = "RANK_ID" in os.environ or "MS_WORKER_NUM" in os.environ
    if launched or getattr(cfg, "distribute", False):
        ms.set_device(target)  # the launcher assigns the device id
    else:
        ms.set_device(target, cfg.device_id)
    ms.set_context(mode=mode)
    if target == "CPU" and mode == ms.GRAPH_MODE and getattr(cfg, "cpu_graph_kernel", True):
        # Graph-kernel fusion: the elementwise chains of the network's CPU formulation
        # (src/model/conv_tasnet.py) run as fused kernels: a paper-configuration training step
        # 1.68 -> 1.33 s and 7.1 -> 2.7 GB (benchmarks/README.md). StridedSlice joins the
        # fused kernels: the depthwise convolution's shifted frames are then read in place
        # instead of copied, 5x faster. It applies to graphs with static shapes.
        ms.set_context(enable_graph_kernel=True,
                       graph_kernel_flags="--enable_cluster_ops=StridedSlice")
    cpu_kernels.set_enabled(getattr(cfg, "cpu_kernels", True))
    ms.set_seed(cfg.seed)


def available_devices():
    return [d for d in ("CPU", "GPU", "Ascend") if ms.hal.is_available(d)]
