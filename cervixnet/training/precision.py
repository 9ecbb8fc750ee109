"""The numeric precision a run trains in: ``training.precision`` resolved for this machine.

``auto`` (the default) picks what measured fastest per device (docs/performance.md):

- a GPU of compute capability 8.0 or newer (A100, H100, ...): ``mixed_bfloat16``;
- an older GPU: ``mixed_float16`` (Keras wraps the optimiser in loss scaling);
- a CPU: ``float32``. A CPU without bfloat16 instructions emulates it at a fraction of
  float32's speed (``train`` warns when it is asked for there). On a CPU with them
  (``cpu_has_bfloat16``), ``mixed_bfloat16`` trained the paper-size joint model 1.86 x as
  fast as float32 but the default-size one only 1.02 x, so ``auto`` keeps float32 and large
  models on such a CPU should ask for ``mixed_bfloat16``.

Under either mixed policy the layers compute in 16 bits and keep float32 weights; the two
outputs (``mask``, ``label``) and every cervixnet loss are float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from cervixnet.config import PRECISIONS
from cervixnet.training.cpu import cpu_flags


def resolve_precision(precision: str) -> str:
    """``precision`` itself, or for ``"auto"`` the fastest policy for the first visible device.

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
    if not gpus:
        return "float32"
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return "mixed_bfloat16" if capability and capability[0] >= 8 else "mixed_float16"


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
