"""TensorFlow's CPU thread pools (``training.intra_op_threads``, ``training.inter_op_threads``).

TensorFlow runs the work inside one operation (a convolution's tiles) on the *intra-op*
pool and independent operations side by side on the *inter-op* pool. Left at ``null`` (the
default), each has as many threads as the CPUs this process may run on; no other setting
measured faster reliably on the project's machines (docs/performance.md). Set them where that
count is wrong:
a container or batch job limited to fewer cores than the machine reports (TensorFlow sees
the CPU affinity but not a CPU quota), or several trainings sharing one machine. The pools
are created with the first TensorFlow operation of a process, so they can be set only
before it, which ``cervixnet train`` does.

``onednn_enabled`` reports whether TensorFlow's oneDNN CPU operations are on (``import
cervixnet`` asks for them on x86-64 CPUs).
"""

from __future__ import annotations

from cervixnet.errors import ConfigError


def set_thread_pools(intra_op: int | None, inter_op: int | None) -> None:
    """Sizes TensorFlow's intra- and inter-op thread pools; ``None`` leaves one as it is.

    Raises:
        ConfigError: a pool already started in this process with another size.
    """
    import tensorflow as tf

    pools = (
        ("intra_op", intra_op, tf.config.threading.get_intra_op_parallelism_threads,
         tf.config.threading.set_intra_op_parallelism_threads),
        ("inter_op", inter_op, tf.config.threading.get_inter_op_parallelism_threads,
         tf.config.threading.set_inter_op_parallelism_threads),
    )  # fmt: skip
    for name, count, current, apply in pools:
        if count is None or current() == count:
            continue
        try:
            apply(count)
        except RuntimeError:
            raise ConfigError(
                f"'training.{name}_threads' = {count}: TensorFlow has already started its "
                f"thread pools in this process ({current() or 'its default'} threads), and "
                "they can be sized only before that; train in a new process, e.g. with "
                f"`cervixnet train`. Received: {name}_threads={count}"
            ) from None


def thread_pools() -> dict[str, int]:
    """The pools' sizes as TensorFlow reports them (0: TensorFlow's default)."""
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its CPU operations with oneDNN here (``None``: unknown).

    The ``cervixnet`` command asks for it on x86-64 CPUs (``TF_ENABLE_ONEDNN_OPTS=1``) unless
    the user set the variable; TensorFlow reads it once, when it loads. In Python, set it
    before importing TensorFlow or Keras.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the query
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
