"""The machine's measured matrix-multiply ceiling, in FLOP/s, per framework and precision.

A model's own count of FLOPs is ``cervixnet.models.flops`` (conv and dense layers, a training
step as three forward passes); this module imports no Keras, so that a ceiling is measured in
a process with only its own framework loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def best_rate(run: Callable[[], None], flops: float, repeats: int = 10) -> float:
    """The best of ``repeats`` timings of ``run`` (which must block until done), in FLOP/s."""
    run()  # warm-up
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return flops / best


def matmul_ceiling(framework: str, dtype: str, n: int = 2048, device: str = "cpu") -> float:
    """Measured FLOP/s of an ``n x n`` matrix multiply in ``framework`` at ``dtype``.

    Args:
        framework: ``"tensorflow"``, ``"jax"`` or ``"torch"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        n: matrix size (large enough to be compute-bound: 2048 on a CPU, 8192 on a GPU).
        device: for torch, ``"cpu"`` or ``"cuda"``; TensorFlow and JAX use their default device.
    """
    flops = 2.0 * n**3
    if framework == "tensorflow":
        import tensorflow as tf

        a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
        return best_rate(lambda: tf.linalg.matmul(a, b).numpy(), flops)
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(0), (n, n), dtype=dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype=dtype)
        product = jax.jit(jnp.matmul)
        return best_rate(lambda: product(a, b).block_until_ready(), flops)
    if framework == "torch":
        import torch

        torch_dtype = getattr(torch, dtype)
        a = torch.randn(n, n, device=device).to(torch_dtype)
        b = torch.randn(n, n, device=device).to(torch_dtype)

        def run() -> None:
            torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()

        return best_rate(run, flops)
    raise ValueError(f"framework must be tensorflow, jax or torch. Received: {framework!r}")
