"""Reading a ``.keras`` file a user hands cervixnet, in Keras' safe mode.

A ``.keras`` file is a zip archive of ``config.json`` (the architecture), ``model.weights.h5``
and ``metadata.json``. A ``Lambda`` layer, or any other Python ``lambda`` in the model, is
stored in ``config.json`` as marshalled Python bytecode that runs, with the user's
permissions, while the model is rebuilt. cervixnet's own models contain none, so
:func:`load_keras_model` refuses such a file unless the caller passes ``unsafe=True``
(``--unsafe`` on the command line). The archive is read and checked before Keras sees it, so
the refusal does not depend on Keras' process-wide safe-mode switch
(``keras.config.enable_unsafe_deserialization``), which cervixnet never turns on; Keras itself
then loads in safe mode (``safe_mode=True``), or with ``safe_mode=False`` for that one call
when ``unsafe=True``.

A file that is not a zip archive, is truncated or corrupt, or holds a model that is not a
cervixnet model (one image input ``(N, H, W, 1 or 3)``, outputs ``mask`` or ``mask`` and
``label``) gets a :class:`~cervixnet.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

# Imported for their registration with Keras: a cervixnet model file names their classes.
from cervixnet import losses, metrics, models  # noqa: F401
from cervixnet.errors import ConfigError, UnsafeModelError

# Keras marks a serialized Python lambda with this class name (keras.saving).
LAMBDA_CLASS_NAME = "__lambda__"
# config.json of a cervixnet model is a few hundred KiB; anything far larger is not one.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
CERVIXNET_OUTPUTS = (["mask"], ["label", "mask"])  # sorted: list or dict outputs alike


def load_keras_model(path: str | Path, *, unsafe: bool = False) -> keras.Model:
    """Loads a cervixnet ``.keras`` model file, refusing embedded Python code by default.

    Args:
        path: a ``.keras`` file.
        unsafe: load a file that contains Python code (a ``Lambda`` layer) and let that code
            run. Only for files from a trusted source; affects this call only.

    Raises:
        UnsafeModelError: the file contains Python code and ``unsafe`` is false.
        ConfigError: the file is missing, not a ``.keras`` archive, truncated or corrupt, or
            not a cervixnet model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such .keras model file")
    holders = embedded_python(path)
    if holders and not unsafe:
        raise UnsafeModelError(_refusal(path, holders))
    try:
        model = keras.saving.load_model(path, safe_mode=not unsafe)
    except Exception as error:  # an untrusted file can break the loader in many ways
        message = " ".join(str(error).split())
        if "arbitrary code execution" in message:
            raise UnsafeModelError(_refusal(path, ["a Python lambda"])) from error
        if len(message) > 300:
            message = message[:300] + "..."
        raise ConfigError(
            f"{path}: cannot be loaded as a Keras model ({type(error).__name__}: {message})"
        ) from error
    check_cervixnet_model(model, path)
    return model


def embedded_python(path: str | Path) -> list[str]:
    """The layers of a ``.keras`` file whose configuration holds Python bytecode.

    Reads ``config.json`` from the archive without building anything.

    Returns:
        One description per place a lambda was found (``"Lambda layer 'name'"``); empty for
        a file that is safe to load.

    Raises:
        ConfigError: not a zip archive, truncated, or without a readable ``config.json``.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{path}: not a .keras model file (a .keras file is a zip archive; this one is "
            "not, or is truncated)"
        )
    info, config = None, None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            info = archive.getinfo("config.json") if "config.json" in names else None
            if info is not None and info.file_size <= MAX_CONFIG_BYTES:
                config = json.loads(archive.read(info).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ConfigError(f"{path}: corrupt .keras model file ({error})") from None
    if info is None:
        raise ConfigError(f"{path}: not a Keras 3 model file (the archive has no config.json)")
    if info.file_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: its config.json is {info.file_size} bytes, too large for a cervixnet model"
        )
    return list(dict.fromkeys(_describe(owner) for owner in _lambda_owners(config, None)))


def check_cervixnet_model(model: keras.Model, path: str | Path) -> None:
    """Checks that ``model`` has the inputs and outputs cervixnet models have.

    Raises:
        ConfigError: not one image input ``(N, H, W, C)`` with fixed ``H``, ``W`` and ``C`` in
            (1, 3), or outputs other than ``['mask']`` or ``['mask', 'label']``.
    """
    inputs = [tuple(t.shape) for t in getattr(model, "inputs", None) or []]
    outputs = sorted(getattr(model, "output_names", None) or [])
    image = inputs[0] if len(inputs) == 1 else ()
    good_input = (
        len(image) == 4
        and all(isinstance(side, int) and side > 0 for side in image[1:3])
        and image[3] in (1, 3)
    )
    if not good_input or outputs not in CERVIXNET_OUTPUTS:
        raise ConfigError(
            f"{path}: not a cervixnet model: expected one image input (N, H, W, 1 or 3) and "
            f"outputs ['mask'] or ['mask', 'label']. Received: inputs {inputs}, outputs "
            f"{outputs}"
        )


def _refusal(path: Path, holders: list[str]) -> str:
    return (
        f"{path}: refused to load: the model contains Python code ({', '.join(holders)}) "
        "that would run with your permissions when it is loaded; if you trust this file and "
        "where it came from, pass --unsafe (unsafe=True in Python) to load it anyway"
    )


def _lambda_owners(node: Any, owner: dict | None) -> Iterator[dict | None]:
    if isinstance(node, dict):
        if node.get("class_name") == LAMBDA_CLASS_NAME:
            yield owner
            return
        if isinstance(node.get("config"), dict) and "class_name" in node:
            owner = node
        for value in node.values():
            yield from _lambda_owners(value, owner)
    elif isinstance(node, list):
        for value in node:
            yield from _lambda_owners(value, owner)


def _describe(owner: dict | None) -> str:
    if owner is None:
        return "a Python lambda"
    name = owner.get("config", {}).get("name") or owner.get("name")
    return f"{owner.get('class_name')} layer {name!r}" if name else str(owner.get("class_name"))
