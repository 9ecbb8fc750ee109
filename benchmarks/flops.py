"""Floating-point work of a Keras model, counted from its layers, and a matmul ceiling.

The count covers the layers that dominate a convolutional network: ``Conv2D``,
``Conv2DTranspose`` and ``Dense`` (2 FLOPs per multiply-add). Normalisation, activations,
pooling and the loss are left out (a few percent for a U-Net). One training step costs about
three forward passes (the backward pass computes gradients for both activations and weights),
the usual approximation for throughput accounting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def forward_flops_per_image(model) -> int:
    """FLOPs of one forward pass of one image through ``model``'s conv and dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            # Every input pixel scatters a kernel_h x kernel_w x filters patch.
            _, height, width, in_channels = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * height * width * kh * kw * in_channels * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            in_channels = layer.input.shape[-1]
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * height * width * kh * kw * in_channels * out_channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def training_flops_per_image(model) -> int:
    """About three forward passes: forward, gradient with respect to activations and weights."""
    return 3 * forward_flops_per_image(model)


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
