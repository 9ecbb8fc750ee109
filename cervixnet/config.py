"""Run configuration: typed sections loaded from YAML, validated, with every default in one file.

The shipped ``configs/default.yaml`` holds every key with its default. A user's YAML file is
merged over it (only the keys it names change), then command-line overrides are applied. Any
key that is not in the defaults, or a value of the wrong type or out of range, raises
:class:`~cervixnet.errors.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import importlib.resources
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cervixnet.errors import ConfigError

ARCHITECTURES = ("unet", "fcn", "deeplabv3", "unet-joint")

# The value of a key that ``cervixnet plan`` decides from the data (cervixnet.training.plan).
AUTO = "auto"

# data.resize: how an image is fitted into data.image_size (cervixnet.data.letterbox).
RESIZE_MODES = ("letterbox", "stretch")


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    """The built-in synthetic data set used when no ``data.path`` is given."""

    n_images: int = 354
    n_preterm: int = 35
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; the mask follows every geometric transform."""

    enabled: bool = True
    rotation_degrees: float = 15.0
    crop: float = 0.1
    horizontal_flip: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise: str = "gaussian"
    noise_std: float = 0.02


@dataclasses.dataclass(frozen=True)
class AnnotationConfig:
    """How ``bezier`` control points become a mask (``cervixnet.data.bezier``)."""

    reading: str = "smooth"
    fusion: str = "majority"


@dataclasses.dataclass(frozen=True)
class CaliperConfig:
    """Caliper removal (``cervixnet.data.calipers.CaliperSpec``), applied when data is prepared."""

    enabled: bool = True
    yellow_hue: tuple[int, int] = (20, 40)
    green_hue: tuple[int, int] = (45, 85)
    min_saturation: int = 100
    min_value: int = 100
    grow_pixels: int = 1
    inpaint_radius: float = 3.0


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    """Class balance: oversampling of the training split, and the evaluation protocol."""

    train_preterm_fraction: float | None = 0.5
    eval: str = "original"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it becomes model input."""

    path: str | None = None
    image_size: tuple[int, int] | str = "auto"
    resize: str = "letterbox"
    channels: int = 1
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    splits_file: str | None = None
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    annotations: AnnotationConfig = AnnotationConfig()
    calipers: CaliperConfig = CaliperConfig()
    balance: BalanceConfig = BalanceConfig()
    augment: AugmentConfig = AugmentConfig()
    autotune: bool = False
    cache: bool | str = "auto"
    classes: tuple[str, ...] = ("cervix",)
    mask_column: str = "mask"
    unlabelled: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Builder arguments: ``base_filters`` for every network, then one mapping per architecture."""

    base_filters: int | str = "auto"
    unet: dict[str, Any] = dataclasses.field(default_factory=lambda: {"depth": "auto"})
    unet_joint: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "depth": "auto",
            "classifier_features": ("bottleneck", "decoder1"),
            "classifier_pooling": "avgmax",
            "classifier_units": (32,),
            "classifier_dropout": 0.3,
            "classifier_trains_encoder": False,
        }
    )
    fcn: dict[str, Any] = dataclasses.field(default_factory=dict)
    deeplabv3: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: str | None = None

    def builder_kwargs(self, arch: str) -> dict[str, Any]:
        """Keyword arguments for ``cervixnet.models.get(arch, ...)`` (input shape excluded)."""
        options = dict(getattr(self, arch.replace("-", "_")))
        return {"base_filters": self.base_filters, "weights": self.weights, **options}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """``L = L_seg + beta * L_cls`` with ``L_seg = alpha * BCE + (1 - alpha) * Dice``."""

    alpha: float = 0.5
    beta: float = 0.8
    positive_weight: float | None = None


# training.precision: Keras dtype policies, or "auto" (cervixnet.training.precision).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

# training.distribution: tf.distribute strategies (cervixnet.training.distribution).
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")

# training.scale_learning_rate: how the learning rate follows the number of replicas.
LEARNING_RATE_SCALINGS = ("none", "linear")


@dataclasses.dataclass(frozen=True)
class SemiSupervisedConfig:
    """Self-training on unannotated scans (``cervixnet.runs.semi_supervised``)."""

    enabled: bool = False
    keep_fraction: float = 0.5
    student_start: str = "teacher"
    annotated_share: float | None = 0.5


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimiser and loop settings (AdamW: Adam with decoupled weight decay)."""

    steps: int | str = "auto"
    epochs: int | None = None
    budget_minutes: float | str = "auto"
    batch_size: int | str = "auto"
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_fraction: float = 0.05
    weight_decay: float = 5e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    jit_compile: bool | str = "auto"
    precision: str = "auto"
    monitor: str = "auto"
    distribution: str = "none"
    cpu_devices: int | None = None
    scale_learning_rate: str = "none"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    semi_supervised: SemiSupervisedConfig = SemiSupervisedConfig()


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """How a trained model predicts when it is scored, and later in ``predict``."""

    tta: bool = True
    largest_component: bool | str = "auto"


@dataclasses.dataclass(frozen=True)
class Config:
    """A fully resolved run configuration."""

    arch: str = "unet-joint"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready mapping (tuples as lists, ``unet_joint`` as ``unet-joint``)."""
        return _to_plain(dataclasses.asdict(self))

    def replace(self, overrides: Mapping[str, Any], source: str = "override") -> Config:
        """Returns a copy with dotted-key overrides applied, e.g. ``{"training.epochs": 3}``."""
        nested: dict[str, Any] = {}
        for dotted, value in overrides.items():
            node = nested
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return from_dict(_deep_merge(self.to_dict(), nested), source=source)


# Range checks: dotted key -> (predicate, expectation shown to the user).
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "arch": (lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES)),
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "data.synthetic.seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "data.image_size": (
        lambda v: v == AUTO or (len(v) == 2 and min(v) > 0),
        "auto or two positive integers [height, width]",
    ),
    "data.resize": (lambda v: v in RESIZE_MODES, "letterbox or stretch"),
    "data.channels": (lambda v: v in (1, 3), "1 (grayscale) or 3 (RGB)"),
    "data.split": (
        lambda v: len(v) == 3 and min(v) >= 0 and v[0] > 0 and abs(sum(v) - 1.0) < 1e-6,
        "three fractions [train, val, test] summing to 1 with train > 0",
    ),
    "data.synthetic.n_images": (lambda v: v >= 10, "an integer >= 10"),
    "data.synthetic.n_preterm": (lambda v: v >= 1, "an integer >= 1"),
    "data.augment.rotation_degrees": (lambda v: 0 <= v <= 180, "degrees in [0, 180]"),
    "data.augment.horizontal_flip": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "data.annotations.reading": (lambda v: v in ("smooth", "chord"), "smooth or chord"),
    "data.annotations.fusion": (
        lambda v: v in ("majority", "union", "intersection"),
        "majority, union or intersection",
    ),
    "data.calipers.yellow_hue": (lambda v: 0 <= v[0] <= v[1] <= 179, "[low, high] in [0, 179]"),
    "data.calipers.green_hue": (lambda v: 0 <= v[0] <= v[1] <= 179, "[low, high] in [0, 179]"),
    "data.calipers.min_saturation": (lambda v: 0 <= v <= 255, "an integer in [0, 255]"),
    "data.calipers.min_value": (lambda v: 0 <= v <= 255, "an integer in [0, 255]"),
    "data.calipers.grow_pixels": (lambda v: v >= 0, "an integer >= 0"),
    "data.calipers.inpaint_radius": (lambda v: v > 0, "a positive number"),
    "data.balance.train_preterm_fraction": (
        lambda v: v is None or 0 < v < 1,
        "a fraction in (0, 1) or null",
    ),
    "data.balance.eval": (lambda v: v in ("original", "paper"), "original or paper"),
    "data.augment.crop": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "data.augment.noise": (lambda v: v in ("gaussian", "speckle"), "gaussian or speckle"),
    "data.augment.brightness": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "data.augment.contrast": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "data.augment.noise_std": (lambda v: v >= 0, "a non-negative number"),
    "data.cache": (lambda v: v in (True, False, "auto"), "true, false or auto"),
    "data.classes": (
        lambda v: (
            len(v) >= 1
            and len(set(v)) == len(v)
            and all(name.isidentifier() and name.lower() != "background" for name in v)
        ),
        "a list of distinct class names (letters, digits and _; 'background' is class 0)",
    ),
    "data.mask_column": (lambda v: bool(v.strip()), "a manifest column name"),
    "data.unlabelled": (lambda v: v is None or bool(v.strip()), "a folder of images or null"),
    "model.base_filters": (lambda v: v == AUTO or v > 0, "auto or a positive integer"),
    "loss.alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "loss.beta": (lambda v: v >= 0, "a non-negative number"),
    "loss.positive_weight": (lambda v: v is None or v > 0, "a positive number or null"),
    "training.steps": (lambda v: v == AUTO or v >= 1, "auto or an integer >= 1"),
    "training.epochs": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "training.budget_minutes": (lambda v: v == AUTO or v > 0, "auto or a positive number"),
    "training.batch_size": (lambda v: v == AUTO or v >= 1, "auto or an integer >= 1"),
    "training.warmup_fraction": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "training.learning_rate": (lambda v: v > 0, "a positive number"),
    "training.lr_schedule": (lambda v: v in ("constant", "cosine"), "constant or cosine"),
    "training.weight_decay": (lambda v: v >= 0, "a non-negative number"),
    "training.beta_1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "training.beta_2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "training.jit_compile": (lambda v: v in (True, False, "auto"), "true, false or auto"),
    "training.precision": (
        lambda v: v in PRECISIONS,
        "auto, float32, mixed_bfloat16 or mixed_float16",
    ),
    "training.distribution": (lambda v: v in DISTRIBUTIONS, "none, mirrored or multi_worker"),
    "training.cpu_devices": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "training.intra_op_threads": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "training.inter_op_threads": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "training.semi_supervised.keep_fraction": (
        lambda v: 0 < v <= 1,
        "a fraction in (0, 1]",
    ),
    "training.semi_supervised.student_start": (
        lambda v: v in ("random", "teacher"),
        "random or teacher",
    ),
    "training.semi_supervised.annotated_share": (
        lambda v: v is None or 0 < v < 1,
        "a fraction in (0, 1) or null",
    ),
    "evaluation.largest_component": (
        lambda v: v in (True, False, AUTO),
        "true, false or auto",
    ),
    "training.scale_learning_rate": (
        lambda v: v in LEARNING_RATE_SCALINGS,
        "none or linear",
    ),
}


def shipped_config_names() -> tuple[str, ...]:
    """Names of the YAML files shipped in ``cervixnet.configs`` (e.g. ``default``, ``paper``)."""
    folder = importlib.resources.files("cervixnet.configs")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def default_config() -> Config:
    """The shipped defaults (``configs/default.yaml``)."""
    return from_dict(_read_shipped("default"), source="default.yaml")


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Loads defaults, merges a YAML file over them, then applies dotted-key overrides.

    Args:
        path: a YAML file, or the name of a shipped config (``paper``); ``None`` for defaults.
        overrides: dotted keys to values, e.g. ``{"training.epochs": 2}``; ``None`` values
            are ignored so that unset command-line options change nothing.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value.
    """
    base = _read_shipped("default")
    source = "default.yaml"
    if path is not None:
        user, source = _read_user_config(path)
        base = _deep_merge(base, user)
    config = from_dict(base, source=source)
    if overrides:
        config = config.replace({k: v for k, v in overrides.items() if v is not None})
    return config


def save_config(config: Config, path: str | Path, comment: str = "") -> None:
    """Writes the fully resolved configuration as YAML (atomically: the old file or the new).

    ``comment``: YAML comment lines (each starting with ``#``) written above the keys.
    """
    from cervixnet.fileio import atomic_write_text

    atomic_write_text(path, comment + yaml.safe_dump(config.to_dict(), sort_keys=False))


def from_dict(values: Mapping[str, Any], source: str = "config") -> Config:
    """Builds a validated :class:`Config` from a complete nested mapping."""
    return _build(Config, values, source, prefix="")


def _read_shipped(name: str) -> dict[str, Any]:
    resource = importlib.resources.files("cervixnet.configs") / f"{name}.yaml"
    return yaml.safe_load(resource.read_text(encoding="utf-8")) or {}


def _read_user_config(path: str | Path) -> tuple[dict[str, Any], str]:
    candidate = Path(path)
    if not candidate.exists() and str(path) in shipped_config_names():
        return _read_shipped(str(path)), f"{path}.yaml"
    if not candidate.is_file():
        shipped = ", ".join(shipped_config_names())
        raise ConfigError(f"Config file not found: {path} (shipped configs: {shipped})")
    try:
        loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:  # one line: the problem and where
        raise ConfigError(f"{candidate}: not valid YAML ({_one_line(error)})") from None
    if loaded is None:
        return {}, str(candidate)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{candidate}: expected a mapping of keys at the top level")
    return loaded, str(candidate)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.replace("unet_joint", "unet-joint"): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, values: Mapping[str, Any], source: str, prefix: str):
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{source}: '{prefix.rstrip('.')}' must be a mapping. Received: {values!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = {f.replace("_", "-") if f == "unet_joint" else f: f for f in fields}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
        field = names[key]
        dotted = f"{prefix}{key}"
        kwargs[field] = _coerce(hints[field], value, source, dotted)
        check = _CHECKS.get(dotted)
        if check is not None and not check[0](kwargs[field]):
            raise ConfigError(f"{source}: '{dotted}' must be {check[1]}. Received: {value!r}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, dotted: str) -> Any:
    """Checks ``value`` against a type hint, converting lists to tuples and ints to floats."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, prefix=f"{dotted}.")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            try:
                return _coerce(option, value, source, dotted)
            except ConfigError:
                pass
        raise _type_error(source, dotted, " or ".join(_describe(o) for o in options), value)
    if hint is type(None):
        if value is None:
            return None
        raise _type_error(source, dotted, "null", value)
    if origin is tuple:
        item_types = typing.get_args(hint)
        if len(item_types) == 2 and item_types[1] is Ellipsis:  # tuple[str, ...]: any length
            if not isinstance(value, list | tuple):
                raise _type_error(source, dotted, "a list", value)
            return tuple(_coerce(item_types[0], v, source, dotted) for v in value)
        if not isinstance(value, list | tuple) or len(value) != len(item_types):
            raise _type_error(source, dotted, f"a list of {len(item_types)} values", value)
        return tuple(_coerce(t, v, source, dotted) for t, v in zip(item_types, value, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(source, dotted, "a mapping", value)
        return {str(k): _plain_value(v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(source, dotted, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(source, dotted, "an integer", value)
    if hint is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None or math.isinf(number):  # NaN fails the range check, naming it
            raise _type_error(source, dotted, "a finite number", value)
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise _type_error(source, dotted, "a string", value)
    return value


def _plain_value(value: Any) -> Any:
    """Builder options: YAML lists become tuples so that they compare and hash like defaults."""
    if isinstance(value, list):
        return tuple(_plain_value(v) for v in value)
    return value


def _describe(hint: Any) -> str:
    """How a type is named in messages: ``float | None`` -> "a number or null"."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} values"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _one_line(error: Exception) -> str:
    """A YAML or decoding error as one line: what is wrong, and where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def _type_error(source: str, dotted: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: '{dotted}' must be {expected}. Received: {value!r}")
