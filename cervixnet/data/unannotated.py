"""A folder of scans no one annotated (``data.unlabelled``, ``cervixnet train --unlabelled``).

Semi-supervised training (``training.semi_supervised``) learns from the manifest's rows with
neither mask nor label and from such a folder of bare images. Every file under the folder
(hidden ones aside) must be an image with the labelled scans' channel count (grey or colour);
the first that is not is refused, by name. The folder is only read: its images are listed in
a manifest in the cache (``<cache>/unannotated/<key>``, one patient per image) and prepared
like the labelled scans (calipers filled, resized to the input), once per content of the folder.

The folder's scans cannot be checked against the split: they should not come from the
validation or test patients, whose scans the manifest's rows keep out of training by
``patient_id`` (``Splits.unannotated_indices``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from cervixnet.config import Config
from cervixnet.data import imagefile
from cervixnet.data.manifest import MANIFEST_NAME, REQUIRED_COLUMNS, Manifest, read_manifest
from cervixnet.errors import DataError
from cervixnet.fileio import atomic_write_text

# The patient id of a folder's scan: this prefix and its path inside the folder.
PATIENT_PREFIX = "unlabelled/"


def channel_kind(image) -> str:
    """``"grey"`` for one channel (with or without alpha), ``"colour"`` for three."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    return "grey" if channels <= 2 else "colour"


def folder_images(folder: str | Path) -> list[Path]:
    """Every file under ``folder``, hidden files and folders aside, in path order.

    Raises:
        DataError: ``folder`` is not a folder, or holds no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--unlabelled {folder}: not a folder")
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    )
    if not files:
        raise DataError(f"--unlabelled {folder}: the folder holds no image")
    return files


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 of the folder's path and the name, size and modification time of each of its
    images: it changes when any of them does."""
    folder = Path(folder).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode())
    for path in folder_images(folder):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_folder(files: list[Path], kind: str) -> None:
    """Decodes every file and checks that it has the channel count ``kind`` of the labelled
    scans (:func:`channel_kind`).

    Raises:
        DataError: naming the first file that is not an image, or of the other channel count.
    """
    for path in files:
        image = imagefile.read_image(path)  # names the file and why it is not an image
        problem = imagefile.pixel_problem(image)
        if problem:
            raise DataError(f"{path}: {problem}")
        found = channel_kind(image)
        if found != kind:
            raise DataError(
                f"{path}: a {found} image ({1 if image.ndim == 2 else image.shape[2]} "
                f"channel(s)), but the labelled scans are {kind}; unannotated scans must come "
                f"from the same kind of export (convert them, or leave this one out)"
            )


def prepared_folder(
    config: Config,
    labelled_image: Path,
    cache_root: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """The prepared manifest of the folder ``config.data.unlabelled``, made once per content
    of the folder (see the module docstring).

    Args:
        config: the run's configuration, with ``data.image_size`` set.
        labelled_image: one labelled scan as the user gave it, whose channel count the
            folder's images must have.

    Raises:
        DataError: see :func:`folder_images` and :func:`check_folder`.
    """
    from cervixnet.data.prepare import prepare_settings
    from cervixnet.data.sources import default_cache_root, prepared_data

    folder = Path(config.data.unlabelled).expanduser().resolve()
    files = folder_images(folder)
    key = hashlib.sha256(
        (folder_fingerprint(folder) + json.dumps(prepare_settings(config), sort_keys=True)).encode()
    ).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    listing = root / "unannotated" / key / MANIFEST_NAME
    if not listing.is_file():
        check_folder(files, channel_kind(imagefile.read_image(labelled_image)))
        listing.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "image": str(path),
                "patient_id": PATIENT_PREFIX + path.relative_to(folder).as_posix(),
                "label": "",
                "mask": "",
            }
            for path in files
        ]
        text = _csv_text(rows)
        atomic_write_text(listing, text)
    if echo is not None:
        echo(f"Unannotated scans: {len(files)} images in {folder}")
    return prepared_data(config, listing, cache_root, echo=echo)


def with_folder(manifest: Manifest, folder_manifest: str | Path) -> Manifest:
    """``manifest`` with the rows of the prepared folder appended (each without mask or
    label).

    Raises:
        DataError: a folder patient id that the manifest already uses.
    """
    extra = read_manifest(folder_manifest)
    known = {r.patient_id for r in manifest.records}
    clash = next((r for r in extra.records if r.patient_id in known), None)
    if clash is not None:
        raise DataError(
            f"{manifest.source}: patient_id '{clash.patient_id}' is also the id of a scan of "
            "the unlabelled folder; rename that patient"
        )
    return dataclasses.replace(manifest, records=(*manifest.records, *extra.records))


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(REQUIRED_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
