"""Where a run's data comes from: a user's folder, or the built-in synthetic data set.

The synthetic set is generated once per specification into a cache folder
(``$XDG_CACHE_HOME/cervixnet`` or ``~/.cache/cervixnet``; ``cache_root`` overrides it) and
reused by later runs. It is written to a temporary folder first and renamed into place, so an
interrupted generation never leaves a half-written cache behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cervixnet.config import Config, SyntheticDataConfig
from cervixnet.data.manifest import MANIFEST_NAME, resolve_manifest_path


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
