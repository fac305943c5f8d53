"""Building the network a configuration and a device ask for.

Engines (one set of parameters, the same names and shapes, so a checkpoint loads into any):
    "plain"    ConvTasNet (src/model/conv_tasnet.py): channels first, MindSpore's convolution and
               GroupNorm operators. Ascend and GPU.
    "matmul"   CpuConvTasNet (src/model/cpu_engine.py): frames last, matrix products and fused
               cells in MindSpore's operators. CPU without the C++ kernels.
    "kernels"  CpuConvTasNet with the fused cells' forward passes as C++ kernels, compiled for this
               machine when such a network is built. CPU with cpu_kernels on (the default) and a
               C++ compiler.
"""
from src.model import cpu_kernels
from src.model.conv_tasnet import ConvTasNet
from src.model_utils.errors import UserError

ENGINES = ("plain", "matmul", "kernels")


def model_kwargs(cfg):
    """ConvTasNet keywords from a Config (C is the config's n_src)."""
    return dict(N=cfg.N, L=cfg.L, B=cfg.B, H=cfg.H, Sc=cfg.Sc, P=cfg.P, X=cfg.X, R=cfg.R,
                C=cfg.n_src, norm_type=cfg.norm_type, causal=cfg.causal,
                mask_nonlinear=cfg.mask_nonlinear, encoder_activation=cfg.encoder_activation,
                edge_pad=cfg.edge_pad, causal_lookahead=cfg.causal_lookahead)


def default_engine(device_target, use_kernels=True):
    """The fastest engine on `device_target`: "plain" off CPU; on CPU "kernels" when
    `use_kernels` (config key cpu_kernels) and the kernels build here (this compiles them), else
    "matmul"."""
    if device_target != "CPU":
        return "plain"
    if use_kernels and cpu_kernels.library() is not None:
        return "kernels"
    return "matmul"


def build_network(cfg, engine=None):
    """The ConvTasNet of `cfg` computed by `engine` (default: default_engine for
    cfg.device_target and cfg.cpu_kernels)."""
    if engine is None:
        engine = default_engine(cfg.device_target, cfg.cpu_kernels)
    if engine not in ENGINES:
        raise UserError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "plain":
        return ConvTasNet(**model_kwargs(cfg))
    from src.model.cpu_engine import CpuConvTasNet
    return CpuConvTasNet(**model_kwargs(cfg), kernels=engine == "kernels")
