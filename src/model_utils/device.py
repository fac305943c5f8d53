"""Device and execution-mode set-up shared by every entry point."""
import os

import mindspore as ms

from src.model_utils.errors import UserError


def init_device(cfg, mode=ms.GRAPH_MODE, device_target=None):
    """Set up this process for an entry point: the device (`device_target`, default
    `cfg.device_target`, and `cfg.device_id` outside a launcher), the execution mode, graph-kernel
    fusion and the operators' threads on CPU (cfg.cpu_graph_kernel, cfg.cpu_threads) and the seed
    (cfg.seed). Once per process.

    Raises UserError when this machine has no such device, instead of MindSpore's C++ stack.
    """
    target = device_target or cfg.device_target
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
        # Graph-kernel fusion: the elementwise chains of the CPU engine (src/model/cpu_engine.py)
        # run as fused kernels, faster and with far less memory (benchmarks/README.md).
        # StridedSlice joins the fused kernels: the depthwise convolution's shifted frames are
        # then read in place instead of copied. It applies to graphs with static shapes.
        ms.set_context(enable_graph_kernel=True,
                       graph_kernel_flags="--enable_cluster_ops=StridedSlice")
    if target == "CPU":
        set_cpu_threads(getattr(cfg, "cpu_threads", 0))
    ms.set_seed(cfg.seed)


def set_cpu_threads(count):
    """Run MindSpore's CPU operators on `count` threads (0: one per CPU this process may use).

    MindSpore's default is 25 threads whatever the machine: on a small one they and the data
    pipeline's workers take turns on the same cores (benchmarks/README.md measures the cost).
    MindSpore accepts the setting once per process; a later call keeps the first count.
    Returns the count in force.
    """
    global _CPU_THREADS
    if _CPU_THREADS is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        _CPU_THREADS = count or (len(usable) if usable else os.cpu_count() or 1)
        ms.device_context.cpu.op_tuning.threads_num(_CPU_THREADS)
    return _CPU_THREADS


_CPU_THREADS = None


def available_devices():
    return [d for d in ("CPU", "GPU", "Ascend") if ms.hal.is_available(d)]
