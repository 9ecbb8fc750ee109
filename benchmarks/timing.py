"""Timing Keras training steps without ``fit``'s set-up and tear-down."""

from __future__ import annotations

import time


def step_clock():
    """A Keras callback that notes when each training step starts and ends.

    Time the steps, not the whole ``fit`` call: ``fit`` also makes its input iterator and
    frees it at the end, and with tf.data's autotuner on (as in Keras' own input for arrays)
    freeing it waits for the autotuner's timer, whose period doubles while the iterator lives
    (10 ms, 20 ms, ... 10 s and more). Timed from outside, a fit then lasts a power of two
    times 10 ms whatever its steps cost. The callback's ``seconds`` runs from the first step's
    start to the last one's end; ``step_seconds`` holds each step's own time. A step that
    began but never ended (Keras begins one more when a finite dataset runs out in an
    epoch) is left out. ``cpu_seconds`` is the process's CPU time (every thread, user and
    system) over the same span; threads that spin while they wait count in it too.
    """
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begins: list[float] = []  # of the steps that ended
            self.ends: list[float] = []
            self.cpu_begins: list[float] = []
            self.cpu_ends: list[float] = []
            self._began = self._cpu_began = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._began, self._cpu_began = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            self.begins.append(self._began)
            self.ends.append(time.perf_counter())
            self.cpu_begins.append(self._cpu_began)
            self.cpu_ends.append(time.process_time())

        @property
        def seconds(self) -> float:
            return self.ends[-1] - self.begins[0]

        @property
        def cpu_seconds(self) -> float:
            return self.cpu_ends[-1] - self.cpu_begins[0]

        @property
        def step_seconds(self) -> list[float]:
            return [end - begin for begin, end in zip(self.begins, self.ends, strict=True)]

    return StepClock()
