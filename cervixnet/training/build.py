"""The network of a run: built from its configuration and compiled with the paper's losses.

Nothing here plans: every option must be set (``cervixnet.training.plan`` decides those left
``auto``, and ``cervixnet.training.build_model`` plans then builds).
"""

from __future__ import annotations

import inspect
import math

import keras

from cervixnet import losses, metrics, models
from cervixnet.config import AUTO, Config
from cervixnet.errors import ConfigError
from cervixnet.training.compilation import resolve_jit_compile
from cervixnet.training.precision import dtype_policy, precision_for


def build_network(config: Config) -> keras.Model:
    """Builds ``config.arch`` at ``config.data.image_size`` with the config's builder options.

    Every option must be set or planned: ``cervixnet.training.build_model`` plans a U-Net
    ``depth`` or ``model.base_filters`` left ``auto`` first.

    The layers take the dtype policy of ``training.precision``, ``auto`` resolved for this
    machine and, on a CPU with bfloat16 instructions, for how wide the model is
    (``cervixnet.training.precision``).

    Raises:
        ConfigError: an option the builder does not take, or a value it rejects.
    """
    if config.data.image_size == AUTO:
        raise ConfigError(
            "data.image_size is 'auto': plan the run first (cervixnet.training.plan.plan_run) "
            "or set it"
        )
    height, width = config.data.image_size
    kwargs = config.model.builder_kwargs(config.arch)
    planned = [key for key, value in kwargs.items() if value == AUTO]
    if planned:
        raise ConfigError(
            f"model.{config.arch}.{planned[0]} is 'auto': plan it first "
            "(cervixnet.training.build_model or plan_run) or set it"
        )
    builder = models.builder(config.arch)
    accepted = inspect.signature(builder).parameters
    for key in kwargs:
        fixed = ("input_shape", "name", "classes")  # classes: from data.classes
        if key not in accepted or key in fixed:
            options = ", ".join(p for p in accepted if p not in fixed)
            raise ConfigError(
                f"unknown key 'model.{config.arch}.{key}' for {builder.__name__}; "
                f"expected one of: {options}"
            )

    classes = len(config.data.classes)

    def build() -> keras.Model:
        return builder(input_shape=(height, width, config.data.channels), classes=classes, **kwargs)

    try:
        with dtype_policy(precision_for(config.training.precision, build)):
            return build()
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"model '{config.arch}': {error}") from None


def learning_rate(config: Config, steps_per_epoch: int, replicas: int = 1):
    """The configured learning rate: constant, or a linear warm-up over the first
    ``training.warmup_fraction`` of the run's steps (from 0), then cosine decay to 1 % by the
    last step.

    With ``training.scale_learning_rate: linear`` the rate is multiplied by ``replicas``.
    """
    peak = config.training.learning_rate
    if config.training.scale_learning_rate == "linear":
        peak *= replicas
    if config.training.lr_schedule == "constant":
        return peak
    total = max(1, steps_per_epoch * run_epochs(config, steps_per_epoch))
    warmup = min(total - 1, round(config.training.warmup_fraction * total))
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total - warmup, alpha=0.01, warmup_target=peak, warmup_steps=warmup
    )


def run_epochs(config: Config, steps_per_epoch: int) -> int:
    """Passes over the training split: ``training.epochs`` when set, else ``training.steps``
    rounded up to whole passes of ``steps_per_epoch`` steps.

    Raises:
        ConfigError: both are unset or ``auto`` (the plan decides them: ``plan_run``).
    """
    if config.training.epochs is not None:
        return config.training.epochs
    if not isinstance(config.training.steps, int):
        raise ConfigError(
            "training.steps is 'auto': plan the run first (cervixnet.training.plan_run) "
            "or set training.steps or training.epochs"
        )
    return max(1, math.ceil(config.training.steps / max(1, steps_per_epoch)))


def compile_model(
    model: keras.Model,
    config: Config,
    positive_weight: float,
    steps_per_epoch: int = 1,
    replicas: int = 1,
) -> None:
    """Compiles with the paper's losses: BCE + Dice on the mask (cross-entropy + mean class
    Dice for several ``data.classes``), weighted BCE on the label.

    The step is compiled by XLA as ``training.jit_compile`` says, ``auto`` resolved for this
    machine and model (``cervixnet.training.compilation``). Under a ``tf.distribute``
    strategy, call it inside the strategy's scope, where the model was built, with
    ``replicas`` its number of replicas (for ``training.scale_learning_rate``).
    """
    classes = len(config.data.classes)
    mask_metrics = [metrics.PerImageIoU(classes=classes), metrics.PerImageDice(classes=classes)]
    mask_loss = (
        losses.BCEDiceLoss(alpha=config.loss.alpha)
        if classes == 1
        else losses.CEDiceLoss(alpha=config.loss.alpha)
    )
    jit_compile = resolve_jit_compile(config.training.jit_compile, model, models.policy_name(model))
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate(config, steps_per_epoch, replicas),
        weight_decay=config.training.weight_decay,
        beta_1=config.training.beta_1,
        beta_2=config.training.beta_2,
    )
    if models.has_label(model):
        model.compile(
            optimizer=optimizer,
            loss={
                "mask": mask_loss,
                "label": losses.WeightedBinaryCrossentropy(positive_weight=positive_weight),
            },
            loss_weights={"mask": 1.0, "label": config.loss.beta},
            # Weighted, so that rows without a mask or a label (weight 0) are left out.
            weighted_metrics={
                "mask": mask_metrics,
                "label": [
                    keras.metrics.AUC(name="auc"),
                    keras.metrics.Precision(name="precision"),
                    keras.metrics.Recall(name="recall"),
                    metrics.Specificity(),
                ],
            },
            jit_compile=jit_compile,
        )
    else:
        model.compile(
            optimizer=optimizer,
            loss=mask_loss,
            weighted_metrics=mask_metrics,
            jit_compile=jit_compile,
        )
