"""The numeric precision a run trains in: ``training.precision`` resolved for this machine.

``auto`` (the default) picks what measured fastest per device (docs/performance.md):

- a GPU of compute capability 8.0 or newer (A100, H100, ...): ``mixed_bfloat16``;
- an older GPU: ``mixed_float16`` (Keras wraps the optimiser in loss scaling);
- a CPU with bfloat16 instructions (``cpu_has_bfloat16``: AVX-512 BF16, AMX, Arm's BF16) and
  a model whose convolutions are wide, half of their FLOPs at
  ``BFLOAT16_MIN_CONVOLUTION_WIDTH`` input channels or more
  (``cervixnet.models.flops.median_convolution_width``): ``mixed_bfloat16``. There it
  trained the joint U-Net 1.7 x as fast as float32 at 32 base filters (median width 128)
  and 1.8 to 2.6 x at the paper's 64 (256), but only 1.0 to 1.1 x at the default 8 (32);
- any other CPU: ``float32``. A CPU without bfloat16 instructions emulates it at a fraction
  of float32's speed (``train`` warns when it is asked for there).

Under either mixed policy the layers compute in 16 bits and keep float32 weights; the two
outputs (``mask``, ``label``) and every cervixnet loss are float32.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import keras

from cervixnet.config import PRECISIONS
from cervixnet.models.flops import median_convolution_width
from cervixnet.training.cpu import cpu_flags

# The median convolution width (input channels) from which mixed_bfloat16 trained clearly
# faster than float32 on CPUs with bfloat16 instructions (docs/performance.md).
BFLOAT16_MIN_CONVOLUTION_WIDTH = 128


def resolve_precision(
    precision: str,
    model: keras.Model | None = None,
    *,
    cpuinfo: str | None = None,
) -> str:
    """``precision`` itself, or for ``"auto"`` the fastest policy for the first visible device.

    Args:
        precision: ``training.precision``: one of ``PRECISIONS``.
        model: the model to train, built in float32; on a CPU ``auto`` picks
            ``mixed_bfloat16`` only for a wide model (:func:`bfloat16_is_faster`), so without
            one a CPU gets ``float32``.
        cpuinfo: the text of ``/proc/cpuinfo``; default: read it.

    Raises:
        ValueError: ``precision`` is not one of ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return "mixed_bfloat16" if capability and capability[0] >= 8 else "mixed_float16"
    if model is not None and bfloat16_is_faster(model, cpuinfo=cpuinfo, has_gpu=False):
        return "mixed_bfloat16"
    return "float32"


def bfloat16_is_faster(
    model: keras.Model, *, cpuinfo: str | None = None, has_gpu: bool | None = None
) -> bool:
    """Whether ``mixed_bfloat16`` measured faster than float32 for ``model`` on this CPU.

    True on a CPU with bfloat16 instructions and no GPU, for a model whose median convolution
    width is at least ``BFLOAT16_MIN_CONVOLUTION_WIDTH``.
    """
    if not cpu_has_bfloat16(cpuinfo):
        return False
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return not has_gpu and median_convolution_width(model) >= BFLOAT16_MIN_CONVOLUTION_WIDTH


def precision_for(
    precision: str, build: Callable[[], keras.Model], *, cpuinfo: str | None = None
) -> str:
    """:func:`resolve_precision` for the model that ``build()`` makes, before it is made.

    Where ``auto`` could pick ``mixed_bfloat16`` on this CPU (bfloat16 instructions, no GPU),
    ``build()`` runs once in float32 to see how wide the model is. Python's random state,
    which seeds Keras' initialisers and dropout, is put back afterwards, so the model built
    next has the weights it would have had without this look.
    """
    resolved = resolve_precision(precision)  # a GPU's policy, or float32 on a CPU
    if precision != "auto" or resolved != "float32" or not cpu_has_bfloat16(cpuinfo):
        return resolved
    state = random.getstate()
    try:
        with dtype_policy("float32"):
            probe = build()
    finally:
        random.setstate(state)
    return resolve_precision(precision, probe, cpuinfo=cpuinfo)


# /proc/cpuinfo flags of bfloat16 arithmetic: x86 AVX-512 BF16 and AMX, Arm's BF16 extension.
_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bfloat16 arithmetic instructions, read from ``/proc/cpuinfo``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; default: read it (``False`` where there is
            none, as on macOS and Windows).
    """
    return bool(_BFLOAT16_FLAGS & cpu_flags(cpuinfo))


def emulation_warning(precision: str, cpuinfo: str | None = None) -> str | None:
    """A warning when ``precision`` asks for bfloat16 that this machine would only emulate.

    ``None`` for float32, float16, or bfloat16 on a GPU or on a CPU with the instructions.
    """
    if resolve_precision(precision) != "mixed_bfloat16":
        return None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or cpu_has_bfloat16(cpuinfo):
        return None
    return (
        "Warning: training.precision is mixed_bfloat16, but this CPU has no bfloat16 "
        "instructions (no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo), so bfloat16 is "
        "emulated and trains several times slower than float32"
    )


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Sets Keras' global dtype policy to ``name`` inside the block and restores it after.

    Layers take the policy when they are created, so building a model inside the block is
    enough; the global setting does not leak into later models.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
