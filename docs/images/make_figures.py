"""Regenerates the figures of docs/synthetic-data.md with matplotlib (Agg), as the reports draw.

Run from the repository root::

    python docs/images/make_figures.py

Writes ``docs/images/synthetic-grid.png`` (six images of the default synthetic data set with
the outlines of their two lips) and ``docs/images/bezier-readings.png`` (the same four
control points filled in both readings).
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from cervixnet.data.bezier import outline, rasterize
from cervixnet.data.synthetic import SyntheticSpec, generate
from cervixnet.figures import save_figure

HERE = Path(__file__).resolve().parent
# The outline of each lip of `lips/` (id 1 anterior, id 2 posterior): neither caliper colour.
LIP_COLOURS = {1: "cyan", 2: "magenta"}


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


def _caption(row: dict[str, str]) -> str:
    label = "preterm" if row["label"] == "1" else "control"
    return (
        f"{row['image'].split('/')[-1]}  {label}  risk {float(row['risk']):.2f}  {row['site']}\n"
        f"length {row['cervical_length_mm']} mm  funnel {float(row['funnelling']):.2f}  "
        f"heterogeneity {float(row['heterogeneity']):.2f}"
    )


def synthetic_grid(path: Path) -> None:
    figure = Figure(figsize=(12, 7.2), layout="constrained")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "data", SyntheticSpec())
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for axes, row in zip(figure.subplots(2, 3).ravel(), _pick_rows(rows), strict=True):
            image = cv2.imread(str(manifest.parent / row["image"]))
            lips = cv2.imread(str(manifest.parent / row["lips_mask"]), cv2.IMREAD_UNCHANGED)
            axes.imshow(image[..., ::-1], interpolation="antialiased")
            for lip, colour in LIP_COLOURS.items():
                axes.contour(lips == lip, levels=[0.5], colors=colour, linewidths=0.8)
            axes.set_title(_caption(row), fontsize=8, loc="left")
            axes.set_axis_off()
    save_figure(figure, path.with_suffix(""), formats=("png",))


def bezier_readings(path: Path) -> None:
    points = np.array([[330.0, 110.0], [250.0, 250.0], [70.0, 210.0], [130.0, 70.0]])
    width, height = 400, 300
    titles = {
        "smooth": 'mode="smooth" (default): through the points',
        "chord": 'mode="chord": control polygon + chord p3-p0',
    }
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    for axes, (mode, title) in zip(figure.subplots(1, 2), titles.items(), strict=True):
        mask = rasterize(points, height, width, mode=mode)
        axes.imshow(np.where(mask[..., None] > 0, [0.96, 0.88, 0.78], 1.0))
        polygon = np.vstack([points, points[:1]]) if mode == "smooth" else points
        axes.plot(polygon[:, 0], polygon[:, 1], "--", color="0.6", linewidth=0.8)
        curve = outline(points, mode=mode, samples=128)
        closed = np.vstack([curve, curve[:1]])
        axes.plot(closed[:, 0], closed[:, 1], color="#003ca0", linewidth=1.6)
        axes.plot(points[:, 0], points[:, 1], "o", color="#dc0000", markersize=5)
        centre = points.mean(axis=0)
        for i, p in enumerate(points):
            away = (p - centre) / np.linalg.norm(p - centre)
            x, y = p + 22 * away
            axes.text(x, y, f"p{i}", color="#b40000", ha="center", va="center", fontsize=9)
        axes.set(title=title, xlim=(0, width), ylim=(height, 0))
        axes.title.set_fontsize(9)
        axes.set_axis_off()
    save_figure(figure, path.with_suffix(""), formats=("png",))


if __name__ == "__main__":
    synthetic_grid(HERE / "synthetic-grid.png")
    bezier_readings(HERE / "bezier-readings.png")
