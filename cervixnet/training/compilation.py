"""Whether the training step is compiled by XLA: ``training.jit_compile`` resolved per run.

``true`` and ``false`` are used as given (Keras' ``jit_compile``). ``auto``, the default, turns
XLA on only where it measured faster (docs/performance.md#compilation): for a float32 model
whose convolutions are wide, half of their FLOPs at ``XLA_MIN_CONVOLUTION_WIDTH`` input channels
or more (``cervixnet.models.flops.median_convolution_width``), on an x86-64 CPU with AVX2 but
no AVX-512. There XLA's own convolutions beat oneDNN's on wide layers and lose on narrow ones,
whatever the image size: the joint U-Net trained 1.2 to 1.5 x as fast with XLA at 64 base
filters (median width 256), 1.0 to 1.16 x at 32 (128), and 0.55 to 0.7 x at 8 and 16 (32 and
64).

Everywhere else ``auto`` means ``false``. On the CPUs with AVX-512 XLA was the slower: on the
AMX CPU at both sizes, and on the AVX-512 BF16 CPU at paper size, 0.79 x in float32 and
0.45 x in ``mixed_bfloat16`` (oneDNN's own convolutions run there at about 90 % of the
float32 matmul ceiling). On GPUs with TensorFlow it has not been timed here, and ``true`` is
worth a try. (Keras' own ``"auto"`` compiles every model it can; it is not what cervixnet's
``auto`` passes on.)
"""

from __future__ import annotations

import platform

import keras

from cervixnet.models.flops import median_convolution_width
from cervixnet.training.cpu import cpu_flags

# The median convolution width (input channels) from which XLA trains at least as fast on an
# AVX2-only CPU (measured there: docs/performance.md#compilation).
XLA_MIN_CONVOLUTION_WIDTH = 128


def xla_is_faster(
    model: keras.Model,
    precision: str,
    *,
    cpuinfo: str | None = None,
    has_gpu: bool | None = None,
    machine: str | None = None,
) -> bool:
    """Whether XLA measured faster for training ``model`` in ``precision`` on this machine.

    Args:
        model: the built model; what counts is how wide its convolutions are
            (``cervixnet.models.flops.median_convolution_width``).
        precision: the resolved Keras dtype policy (``training.precision`` after ``auto``).
        cpuinfo: the text of ``/proc/cpuinfo``; default: read it.
        has_gpu: whether TensorFlow sees a GPU; default: ask TensorFlow.
        machine: ``platform.machine()``; default: this one's.
    """
    if precision != "float32":
        return False
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags(cpuinfo)
    if "avx2" not in flags or "avx512f" in flags:
        return False
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if has_gpu:
        return False
    return median_convolution_width(model) >= XLA_MIN_CONVOLUTION_WIDTH


def resolve_jit_compile(setting: bool | str, model: keras.Model, precision: str) -> bool:
    """``setting`` itself, or for ``"auto"`` whether XLA measured faster (:func:`xla_is_faster`).

    Raises:
        ValueError: ``setting`` is not ``True``, ``False`` or ``"auto"``.
    """
    if setting is True or setting is False:
        return setting
    if setting != "auto":
        raise ValueError(f"jit_compile must be true, false or auto. Received: {setting!r}")
    return xla_is_faster(model, precision)
