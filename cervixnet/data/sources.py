"""Where a run's data comes from: a user's folder, or the built-in synthetic data set.

The synthetic set is generated once per specification into a cache folder
(``$XDG_CACHE_HOME/cervixnet`` or ``~/.cache/cervixnet``; ``cache_root`` overrides it) and
reused by later runs. It is written to a temporary folder first and renamed into place, so an
interrupted generation never leaves a half-written cache behind.

Training reads a prepared copy (:mod:`cervixnet.data.prepare`). A folder written by
``cervixnet data prepare`` is used as it is; any other folder is prepared once into
``<cache>/prepared/<key>``, the key being a hash of the manifest, the size and modification
time of every file it lists, and the settings that decide the prepared pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cervixnet.config import Config, SyntheticDataConfig
from cervixnet.data.manifest import DEFAULT_CLASSES, MANIFEST_NAME, resolve_manifest_path
from cervixnet.errors import ConfigError


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/cervixnet`` or ``~/.cache/cervixnet``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cervixnet"


def synthetic_data(spec: SyntheticDataConfig, cache_root: str | Path | None = None) -> Path:
    """Returns the manifest of the cached synthetic data set, generating it if needed."""
    from cervixnet.data import synthetic

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    folder = root / (
        f"synthetic-v{synthetic.GENERATOR_VERSION}-n{spec.n_images}-p{spec.n_preterm}-s{spec.seed}"
    )
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        synthetic.generate(
            staging,
            synthetic.SyntheticSpec(
                n_images=spec.n_images, n_preterm=spec.n_preterm, seed=spec.seed
            ),
        )
        try:
            staging.rename(folder)
        except OSError:  # another process finished first; keep its copy
            if not manifest.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def resolve_data(config: Config, cache_root: str | Path | None = None) -> Path:
    """The manifest a run reads: ``config.data.path`` or the cached synthetic set."""
    if config.data.path is not None:
        return resolve_manifest_path(config.data.path)
    return synthetic_data(config.data.synthetic, cache_root)


def prepared_data(
    config: Config,
    manifest_path: str | Path,
    cache_root: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """The manifest of a prepared copy of ``manifest_path``'s data set, preparing it if needed.

    A folder written by ``cervixnet data prepare`` is returned as it is. Any other folder is
    prepared with ``config``'s settings into the cache, once: later runs with the same data
    and settings reuse the copy.
    """
    from cervixnet.data import prepare

    manifest_path = Path(manifest_path)
    if prepare.is_prepared(manifest_path.parent):
        info = prepare.load_prepared_info(manifest_path.parent) or {}
        prepared_classes = tuple(info.get("classes", DEFAULT_CLASSES))
        if prepared_classes != tuple(config.data.classes):
            raise ConfigError(
                f"{manifest_path.parent} was prepared with the classes "
                f"{list(prepared_classes)}, but data.classes is {list(config.data.classes)}; "
                "prepare the source data again with this configuration"
            )
        return manifest_path
    settings = prepare.prepare_settings(config)
    key = hashlib.sha256(
        json.dumps(
            [str(manifest_path.resolve()), prepare.source_fingerprint(manifest_path), settings],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / "prepared" / key
    if (target / MANIFEST_NAME).is_file():
        return target / MANIFEST_NAME
    if echo is not None:
        height, width = config.data.image_size
        echo(
            f"Preparing {manifest_path} once (calipers removed, masks built, resized to "
            f"{height}x{width}) into {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        prepare.prepare(manifest_path, staging / key, config)
        try:
            (staging / key).rename(target)
        except OSError:  # another process finished first; keep its copy
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / MANIFEST_NAME
