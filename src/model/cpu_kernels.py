"""The C++ kernels of the CPU engine (src/model/kernels/conv_tasnet_cpu.cc) as MindSpore operators.

Each kernel runs one chain of a convolutional block (PReLU, depthwise convolution, gLN) in two
passes over its tensor, for graphs of any length. MindSpore 2.7: graph-kernel fusion works only
for static shapes, so the dynamic-length graph (eval.py) otherwise runs every elementwise
operator as a kernel of its own (benchmarks/README.md).

The source is compiled on first use with the machine's C++ compiler (`$CXX`, else g++) for this
CPU (-march=native) into a cache folder, `$CONV_TASNET_KERNEL_CACHE` or
~/.cache/conv_tasnet_mindspore, under a name that hashes the source, the flags, the compiler and
the CPU, so that a changed source or another machine sharing the folder gets its own build.
Nothing is compiled until a network with the "kernels" engine is built (src/model/build.py).
Without a compiler (or if the build fails) `library()` is None and says why once; the default
engine is then "matmul", the same computation in MindSpore's own operators.
"""
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "conv_tasnet_cpu.cc")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
CACHE_ENV = "CONV_TASNET_KERNEL_CACHE"
# kernel name -> number of tensor inputs (the source's header lists them)
KERNELS = {"GlobalNorm": 3, "PReLUNorm": 4, "DepthwisePReLUNorm": 7}

logger = logging.getLogger(__name__)


def cache_dir():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "conv_tasnet_mindspore")


def _cpu_flags():
    """The CPU's feature flags (what -march=native compiles for); the machine name elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(directory=None, compiler=None, source_path=None, extra_flags=()):
    """Compile the kernels (or another source of the project, `source_path`; default SOURCE)
    unless a build for this source, compiler, CPU and flags exists; its path. `extra_flags` follow
    FLAGS (the tests build the code paths of CPUs without AVX-512 with -mno-avx512f).

    The library is written under a temporary name and renamed, so that concurrent processes (a
    distributed launch) and killed builds never leave a partial file. Raises OSError or
    subprocess.CalledProcessError when the compiler is missing or fails.
    """
    compiler = compiler or os.environ.get("CXX") or "g++"
    executable = shutil.which(compiler)
    if executable is None:
        raise OSError(f"no C++ compiler {compiler!r} on PATH")
    version = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             check=True).stdout
    source_path = source_path or SOURCE
    with open(source_path, "rb") as f:
        source = f.read()
    flags = (*FLAGS, *extra_flags)
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode(),
                                     _cpu_flags().encode()])).hexdigest()[:16]
    directory = directory or cache_dir()
    stem = os.path.splitext(os.path.basename(source_path))[0]
    path = os.path.join(directory, f"{stem}_{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        subprocess.run([executable, *flags, "-o", tmp, source_path], capture_output=True,
                       text=True, check=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def build_or_reason(source_path=None):
    """(path of the build of `source_path`, None), or (None, why it could not be built: the
    compiler's first line of complaint, or the missing compiler)."""
    try:
        return build(source_path=source_path), None
    except subprocess.CalledProcessError as err:
        why = (err.stderr or "").strip().splitlines()
        return None, why[0] if why else f"exit status {err.returncode}"
    except OSError as err:
        return None, str(err)


@functools.lru_cache(maxsize=None)
def library():
    """Path of the compiled kernels for this process, or None when they cannot be built."""
    path, why = build_or_reason()
    if path is None:
        logger.warning("CPU kernels not built (%s); using MindSpore's operators, which are "
                       "slower for graphs of any length", why)
    return path


@functools.lru_cache(maxsize=None)
def custom_op(name):
    """The kernel `name` (a key of KERNELS) as an ops.Custom; its output has its first input's
    shape and is float32."""
    import mindspore as ms
    from mindspore import ops
    from mindspore.ops import CustomRegOp, DataType

    path = library()
    if path is None:
        raise RuntimeError("the CPU kernels are not built (see cpu_kernels.library)")
    count = KERNELS[name]
    reg = CustomRegOp(name)
    for i in range(count):
        reg = reg.input(i, f"x{i}")
    # The registration (with out_shape None) makes MindSpore call <name>InferShape in the
    # library, which a graph with a dynamic length needs.
    reg = reg.output(0, "y").dtype_format(*[DataType.None_None] * (count + 1)).target("CPU")
    return ops.Custom(f"{path}:{name}", out_shape=None, out_dtype=ms.float32, func_type="aot",
                      reg_info=reg.get_op_info())
