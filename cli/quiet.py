"""TensorFlow's start-up log lines, kept off the output of ``cervixnet`` commands.

TensorFlow's C++ code writes lines such as ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR``, oneDNN's ``port.cc`` notice and
``cudart_stub.cc``'s "Could not find cuda drivers" while it loads and finds its devices,
before absl's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. A command
that needs TensorFlow calls :func:`start_tensorflow` first: it loads TensorFlow and its devices
with the process's standard error (file descriptor 2) sent to a temporary file, then writes
back every line that is not one of those start-up notices, so errors stay visible.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile

# Start-up notices: absl's pre-initialisation warning, C++ info and warning lines
# (``I0000 00:00:1796619094.567705    3791 cudart_stub.cc:31] ...``), the CPU feature notice's
# second line, and the failed CUDA initialisation of a machine without a GPU.
STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] .*"
    r"|E\d{4} [\d:.]+\s+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate .*"
)


def set_environment(verbose: bool) -> None:
    """TensorFlow's settings for a command, each only where the user has not set it.

    ``TF_CPP_MIN_LOG_LEVEL`` 2 (errors only; 0 with ``verbose``), and on x86-64
    ``TF_ENABLE_ONEDNN_OPTS`` 1: TensorFlow turns its oneDNN CPU kernels on by itself only on
    some CPUs, and without them an AVX2-only CPU trained the default joint U-Net 2.4 x slower
    (docs/performance.md). Both are read once, when TensorFlow loads.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def without_startup_noise(text: str) -> str:
    """``text`` without the lines that :data:`STARTUP_NOISE` matches."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not STARTUP_NOISE.fullmatch(line.rstrip("\r\n")))


def start_tensorflow(verbose: bool = False) -> None:
    """Loads TensorFlow and finds its devices, without the start-up notices unless ``verbose``.

    Sets the environment first (:func:`set_environment`). Everything else written to standard
    error meanwhile (errors, Python warnings) is written back when loading ends, also when it
    fails.
    """
    set_environment(verbose)
    if verbose or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(without_startup_noise(captured.read().decode("utf-8", "replace")))
            sys.stderr.flush()
