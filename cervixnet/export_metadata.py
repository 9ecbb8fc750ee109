"""Where an export's metadata lies, and how to read it (no TensorFlow needed).

``cervixnet export`` writes ``BASE/<version>/assets.extra/cervixnet.json`` next to the
SavedModel (``cervixnet.export``); ``cervixnet predict`` and clients read it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cervixnet.errors import ConfigError

METADATA_NAME = "cervixnet.json"
METADATA_FOLDER = "assets.extra"
METADATA_FORMAT = 1


def export_versions(base_dir: Path) -> list[int]:
    """The integer version folders in an export's base folder (TF Serving's layout)."""
    if not base_dir.is_dir():
        return []
    return [int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit()]


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The ``cervixnet.json`` of an export.

    Args:
        path: a version folder, its ``cervixnet.json``, or a base folder (then its highest
            version).

    Raises:
        ConfigError: no readable ``cervixnet.json`` there.
    """
    path = Path(path)
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        versions = export_versions(path)
        if versions:
            path = path / str(max(versions))
    if path.is_dir():
        path = path / METADATA_FOLDER / METADATA_NAME
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{path}: no readable cervixnet export metadata ({error}); expected a version "
            f"folder written by cervixnet export, with {METADATA_FOLDER}/{METADATA_NAME}"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != "cervixnet-savedmodel":
        raise ConfigError(f"{path}: not cervixnet export metadata")
    return metadata
