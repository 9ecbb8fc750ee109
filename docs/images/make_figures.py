"""Regenerates the figures of docs/synthetic-data.md (OpenCV and NumPy only).

Run from the repository root::

    python docs/images/make_figures.py

Writes ``docs/images/synthetic-grid.png`` (six images of the default synthetic data set with
their mask outlines) and ``docs/images/bezier-readings.png`` (the same four control points
filled in both readings).
"""

from __future__ import annotations

import csv
import itertools
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cervixnet.data.bezier import outline, rasterize
from cervixnet.data.synthetic import SyntheticSpec, generate

HERE = Path(__file__).resolve().parent
TILE = (400, 300)  # width, height of one grid tile
CAPTION = 44  # pixels of caption under each tile
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 9]
FONT = cv2.FONT_HERSHEY_SIMPLEX
OUTLINE_BGR = (255, 255, 0)  # cyan: neither caliper colour


def _pick_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Six images of distinct patients spanning the cervical lengths, with a funnel and a
    preterm case among them."""
    firsts = list({row["patient_id"]: row for row in reversed(rows)}.values())[::-1]
    firsts.sort(key=lambda row: float(row["cervical_length_mm"]))
    chosen = [firsts[round(q * (len(firsts) - 1))] for q in (0.05, 0.3, 0.55, 0.8, 0.97)]
    funnel = next(
        r
        for r in firsts
        if float(r["funnelling"]) > 0.3 and float(r["cervical_length_mm"]) > 18 and r not in chosen
    )
    return sorted([*chosen, funnel], key=lambda row: row["image"])


def _tile(folder: Path, row: dict[str, str]) -> np.ndarray:
    image = cv2.imread(str(folder / row["image"]))
    mask = cv2.imread(str(folder / row["mask"]), cv2.IMREAD_GRAYSCALE)
    scale = TILE[0] / image.shape[1]
    image = cv2.resize(image, TILE, interpolation=cv2.INTER_AREA)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = [np.round(c * scale).astype(np.int32) for c in contours]
    cv2.drawContours(image, contours, -1, OUTLINE_BGR, 1, cv2.LINE_AA)
    caption = np.zeros((CAPTION, TILE[0], 3), dtype=np.uint8)
    label = "preterm" if row["label"] == "1" else "control"
    lines = [
        f"{row['image'].split('/')[-1]}  {label}  risk {float(row['risk']):.2f}  {row['site']}",
        f"length {row['cervical_length_mm']} mm  funnel {float(row['funnelling']):.2f}  "
        f"heterogeneity {float(row['heterogeneity']):.2f}",
    ]
    for i, text in enumerate(lines):
        cv2.putText(caption, text, (6, 17 + 19 * i), FONT, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return np.vstack([image, caption])


def synthetic_grid(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "data", SyntheticSpec())
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        tiles = [_tile(manifest.parent, row) for row in _pick_rows(rows)]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, dtype=np.uint8)
    strips = [np.hstack([tiles[i], gap, tiles[i + 1], gap, tiles[i + 2]]) for i in (0, 3)]
    grid = np.vstack([strips[0], np.full((4, strips[0].shape[1], 3), 255, np.uint8), strips[1]])
    cv2.imwrite(str(path), grid, PNG)


def _panel(points: np.ndarray, mode: str, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    mask = rasterize(points, height, width, mode=mode)
    panel = np.full((height, width, 3), 255, dtype=np.uint8)
    panel[mask > 0] = (200, 225, 245)
    # The control polygon, dashed grey.
    polygon = np.vstack([points, points[:1]]) if mode == "smooth" else points
    for a, b in itertools.pairwise(polygon):
        for t in np.arange(0.0, 1.0, 0.08):
            p = a + (b - a) * t
            q = a + (b - a) * min(t + 0.04, 1.0)
            cv2.line(panel, _px(p), _px(q), (150, 150, 150), 1, cv2.LINE_AA)
    curve = outline(points, mode=mode, samples=128)
    cv2.polylines(panel, [_fixed(curve)], True, (160, 60, 0), 2, cv2.LINE_AA, 4)
    for i, p in enumerate(points):
        cv2.circle(panel, _px(p), 5, (0, 0, 220), -1, cv2.LINE_AA)
        away = (p - points.mean(axis=0)) / np.linalg.norm(p - points.mean(axis=0))
        corner = p + 20 * away + np.array([-9, 6])  # text box centred 20 px outwards
        cv2.putText(panel, f"p{i}", _px(corner), FONT, 0.55, (0, 0, 180), 1, cv2.LINE_AA)
    title = {
        "smooth": 'mode="smooth" (default): through the points',
        "chord": 'mode="chord": control polygon + chord p3-p0',
    }[mode]
    cv2.putText(panel, title, (10, 24), FONT, 0.5, (40, 40, 40), 1, cv2.LINE_AA)
    return panel


def _px(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def _fixed(curve: np.ndarray) -> np.ndarray:
    return np.round(curve * 16).astype(np.int32)


def bezier_readings(path: Path) -> None:
    points = np.array([[330.0, 110.0], [250.0, 250.0], [70.0, 210.0], [130.0, 70.0]])
    size = (400, 300)
    panels = [_panel(points, mode, size) for mode in ("smooth", "chord")]
    gap = np.full((size[1], 6, 3), 200, dtype=np.uint8)
    cv2.imwrite(str(path), np.hstack([panels[0], gap, panels[1]]), PNG)


if __name__ == "__main__":
    synthetic_grid(HERE / "synthetic-grid.png")
    bezier_readings(HERE / "bezier-readings.png")
