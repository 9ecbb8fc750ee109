"""Report figures drawn with OpenCV: layout, pixels where the data say, input checks."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cervixnet import plots

RED = (0, 0, 255)
WHITE = (255, 255, 255)
SIZE = (640, 480)


def near(pixel: np.ndarray, color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return int(np.max(np.abs(pixel.astype(int) - np.array(color)))) <= tolerance


def pixel_at(image: np.ndarray, axes: plots.Axes, x: float, y: float) -> np.ndarray:
    column, row = axes.to_pixel(x, y)
    return image[round(float(row)), round(float(column))]


def colour_mask(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    return np.max(np.abs(image.astype(int) - np.array(color)), axis=2) <= tolerance


def identity_chart(y: np.ndarray, label: str = "y = x") -> tuple[np.ndarray, plots.Axes]:
    x = np.linspace(0.0, 1.0, y.size)
    image = plots.line_chart(
        [(label, x, y, {"color": RED})],
        title="t",
        xlabel="x",
        ylabel="y",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    return image, plots.plot_axes(SIZE, title="t", xlabel="x", ylabel="y")


# Line charts


def test_line_chart_is_a_png_ready_bgr_image_of_the_requested_size():
    image = plots.line_chart([("a", [0, 1, 2], [3, 1, 2])], title="t", xlabel="x", ylabel="y")
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    assert cv2.imencode(".png", image)[0]
    assert (image[0, 0] == 255).all()  # white background
    wide = plots.line_chart(
        [("a", [0, 1], [0, 1])], title="", xlabel="", ylabel="", size=(800, 300)
    )
    assert wide.shape == (300, 800, 3)


def test_line_chart_draws_the_curve_where_the_axes_map_the_data():
    image, axes = identity_chart(np.linspace(0.0, 1.0, 11))
    assert near(pixel_at(image, axes, 0.5, 0.5), RED)
    assert near(pixel_at(image, axes, 0.25, 0.25), RED)
    assert (pixel_at(image, axes, 0.9, 0.1) == WHITE).all()
    assert (pixel_at(image, axes, 0.1, 0.9) == WHITE).all()
    # The frame lies outside the data limits, the axes' extent inside the image.
    left, top, right, bottom = axes.frame
    assert 0 < left < axes.to_pixel(0, 0)[0] < axes.to_pixel(1, 1)[0] < right < SIZE[0]
    assert 0 < top < axes.to_pixel(1, 1)[1] < axes.to_pixel(0, 0)[1] < bottom < SIZE[1]


def test_layout_depends_on_whether_texts_are_present():
    with_texts = plots.plot_axes(SIZE, title="t", xlabel="x", ylabel="y")
    without = plots.plot_axes(SIZE)
    assert without.frame[0] < with_texts.frame[0] and without.frame[1] < with_texts.frame[1]
    assert plots.plot_axes(SIZE, title="a long title", xlabel="x", ylabel="y") == with_texts


def test_nan_breaks_the_line_without_error():
    y = np.linspace(0.0, 1.0, 101)
    y[40:61] = np.nan
    image, axes = identity_chart(y, label="")
    assert near(pixel_at(image, axes, 0.2, 0.2), RED)
    assert near(pixel_at(image, axes, 0.8, 0.8), RED)
    assert (pixel_at(image, axes, 0.5, 0.5) == WHITE).all()
    # No stray line: every red pixel lies on y = x.
    rows, columns = np.nonzero(colour_mask(image, RED, 120))
    on_line = np.interp(columns, *axes.to_pixel([0, 1], [0, 1]))
    assert len(rows) > 100 and np.abs(rows - on_line).max() <= 3


def test_all_nan_series_with_limits_and_lone_points_do_not_crash():
    image, axes = identity_chart(np.full(5, np.nan), label="")  # no legend
    assert not colour_mask(image, RED).any()
    lone = np.array([np.nan, 0.5, np.nan])  # a point between NaNs is drawn as a dot
    image = plots.line_chart(
        [("dot", [0.2, 0.5, 0.8], lone, {"color": RED})],
        title="t",
        xlabel="x",
        ylabel="y",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    assert near(pixel_at(image, axes, 0.5, 0.5), RED)


def test_automatic_limits_are_round_and_cover_the_data():
    image = plots.line_chart([("a", [0.3, 7.3], [-2.2, 13.0])], title="", xlabel="", ylabel="")
    assert image.shape == (480, 640, 3)
    assert plots.nice_ticks(0.0, 1.0).tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert plots.nice_ticks(0.0, 7.3).tolist() == [0, 2, 4, 6]
    assert plots.nice_ticks(-2.2, 13.0).tolist() == [0, 5, 10]
    assert plots.nice_ticks(1, 3, min_step=1).tolist() == [1, 2, 3]


def test_markers_and_diagonal():
    image = plots.line_chart(
        [("", [0, 1], [1, 1], {"color": RED})],
        title="t",
        xlabel="x",
        ylabel="y",
        xlim=(0, 1),
        ylim=(0, 1),
        markers=[("point", [0.3], [0.6], {"color": (255, 0, 0)})],
        diagonal=True,
    )
    axes = plots.plot_axes(SIZE, title="t", xlabel="x", ylabel="y")
    assert near(pixel_at(image, axes, 0.3, 0.6), (255, 0, 0))
    columns, rows = axes.to_pixel(np.linspace(0.05, 0.95, 200), np.linspace(0.05, 0.95, 200))
    diagonal = image[np.round(rows).astype(int), np.round(columns).astype(int)]
    grey = (np.ptp(diagonal.astype(int), axis=1) < 10) & (diagonal.max(axis=1) < 200)
    assert 0.3 < grey.mean() < 0.9  # dashed: grey along part of y = x, with gaps


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ([], "series=[]"),
        ([("a", [0, 1, 2], [0, 1])], "len(x)=3, len(y)=2"),
        ([("a", [], [])], "Received: 0"),
        ([("a", [0, 1])], "(label, x, y)"),
        ([(1, [0, 1], [0, 1])], "label=1"),
        ([("a", [0, 1], [0, 1], {"colour": RED})], "'colour'"),
        ([("a", [0, 1], [0, 1], {"color": (0, 0, 256)})], "color=(0, 0, 256)"),
        ([("a", [0, 1], [0, 1], {"thickness": 0})], "thickness=0"),
        ([("a", [np.nan], [np.nan])], "xlim=None"),
    ],
)
def test_line_chart_rejects_bad_series_with_the_received_value(series, message):
    with pytest.raises(ValueError, match="Received") as error:
        plots.line_chart(series, title="t", xlabel="x", ylabel="y")
    assert message in str(error.value)


def test_line_chart_rejects_bad_limits_and_size():
    series = [("a", [0, 1], [0, 1])]
    with pytest.raises(ValueError, match=r"xlim=\(1, 1\)"):
        plots.line_chart(series, title="t", xlabel="x", ylabel="y", xlim=(1, 1))
    with pytest.raises(ValueError, match=r"size=\(10, 10\)"):
        plots.line_chart(series, title="t", xlabel="x", ylabel="y", size=(10, 10))


# ROC, precision-recall, reliability


def classifier_output() -> tuple[np.ndarray, np.ndarray]:
    """4 preterm (3 at or above 0.5) and 4 controls (1 at or above 0.5), one NaN label."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, np.nan])
    probabilities = np.array([0.9, 0.8, 0.5, 0.2, 0.6, 0.3, 0.2, 0.1, 0.99])
    return labels, probabilities


def test_roc_operating_point_is_marked_at_its_sensitivity_and_false_positive_rate():
    labels, probabilities = classifier_output()
    image = plots.roc_curve_plot(labels, probabilities, threshold=0.5)
    assert image.shape == (480, 640, 3) and cv2.imencode(".png", image)[0]
    axes = plots.plot_axes(SIZE, title="ROC", xlabel="x", ylabel="y")
    marker = plots.PALETTE[1]
    assert near(pixel_at(image, axes, 0.25, 0.75), marker)
    assert not colour_mask(image, marker)[round(float(axes.to_pixel(0, 0.2)[1])) :].any()
    curve = plots.PALETTE[0]
    assert near(pixel_at(image, axes, 0.0, 0.25), curve)  # ROC goes up x = 0 to (0, 0.5)
    assert not near(pixel_at(image, axes, 0.6, 0.3), curve)


def test_roc_of_perfect_separation_hugs_the_upper_left_corner():
    image = plots.roc_curve_plot([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.5, size=(500, 400))
    axes = plots.plot_axes((500, 400), title="ROC", xlabel="x", ylabel="y")
    assert near(pixel_at(image, axes, 0.0, 0.5), plots.PALETTE[0])
    assert near(pixel_at(image, axes, 0.5, 1.0), plots.PALETTE[0])
    assert near(pixel_at(image, axes, 0.0, 1.0), plots.PALETTE[1])  # operating point
    # The curve stays on the left and top edges: blue lower right is the legend's sample line.
    (left, right), (bottom, top) = (
        np.round(v).astype(int) for v in axes.to_pixel([0.5, 1], [0, 0.5])
    )
    assert colour_mask(image[top:bottom, left:right], plots.PALETTE[0], 10).sum() > 30


@pytest.mark.parametrize(
    ("labels", "probabilities", "threshold", "message"),
    [
        ([0, 1], [0.2, 0.8], 1.5, "threshold=1.5"),
        ([0, 1, 1], [0.2, 0.8], 0.5, "labels.size=3, probabilities.size=2"),
        ([1, 1], [0.2, 0.8], 0.5, "2 preterm and 0 control"),
        ([0, 2], [0.2, 0.8], 0.5, "with value 2"),
        ([0, 1], [0.2, 1.8], 0.5, "e.g. 1.8"),
    ],
)
def test_curves_reject_bad_input(labels, probabilities, threshold, message):
    for plot in (plots.roc_curve_plot, plots.precision_recall_plot):
        with pytest.raises(ValueError, match="Received") as error:
            plot(labels, probabilities, threshold)
        assert message in str(error.value)


def test_precision_recall_marks_operating_point_and_prevalence():
    labels, probabilities = classifier_output()
    image = plots.precision_recall_plot(labels, probabilities, threshold=0.55)
    axes = plots.plot_axes(SIZE, title="PR", xlabel="x", ylabel="y")
    assert near(pixel_at(image, axes, 0.5, 2 / 3), plots.PALETTE[1])  # recall 2/4, precision 2/3
    # The two highest probabilities are preterm: precision 1 up to recall 0.5.
    assert near(pixel_at(image, axes, 0.25, 1.0), plots.PALETTE[0])
    assert near(pixel_at(image, axes, 0.45, 1.0), plots.PALETTE[0])
    assert near(pixel_at(image, axes, 0.625, 0.75), plots.PALETTE[0])  # a step, not a slope
    columns, rows = axes.to_pixel(np.linspace(0.05, 0.45, 100), np.full(100, 0.5))
    prevalence = image[np.round(rows).astype(int), np.round(columns).astype(int)]
    assert (np.ptp(prevalence.astype(int), axis=1) < 10).all()  # grey or white only
    assert (prevalence.max(axis=1) < 200).mean() > 0.3  # dashed grey line at 4/8 = 0.5


def test_precision_recall_without_predicted_positive_has_no_marker():
    image = plots.precision_recall_plot([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3], threshold=0.9)
    assert not colour_mask(image, plots.PALETTE[1], 20).any()


def test_reliability_dots_at_the_bins_and_empty_bins_skipped():
    mean = np.array([0.1, np.nan, 0.5, 0.8])
    observed = np.array([0.2, np.nan, 0.4, 0.9])
    image = plots.reliability_plot(mean, observed, [30, 0, 10, 5], brier=0.123)
    assert image.shape == (480, 640, 3) and cv2.imencode(".png", image)[0]
    axes = plots.plot_axes(SIZE, title="R", xlabel="x", ylabel="y")
    for x, y in ((0.1, 0.2), (0.5, 0.4), (0.8, 0.9)):
        assert near(pixel_at(image, axes, x, y), plots.PALETTE[0])
    # The biggest bin gets the biggest dot.
    blue = colour_mask(image, plots.PALETTE[0], 20)
    column, row = (round(float(v)) for v in axes.to_pixel(0.1, 0.2))
    big = blue[row - 12 : row + 13, column - 12 : column + 13].sum()
    column, row = (round(float(v)) for v in axes.to_pixel(0.8, 0.9))
    assert big > blue[row - 12 : row + 13, column - 12 : column + 13].sum()


def test_reliability_rejects_bad_bins():
    with pytest.raises(ValueError, match="Received: 2, 2 and 3"):
        plots.reliability_plot([0.1, 0.2], [0.1, 0.2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"count=\[1.0, -2.0\]"):
        plots.reliability_plot([0.1, 0.2], [0.1, 0.2], [1, -2])
    with pytest.raises(ValueError, match="No bin"):
        plots.reliability_plot([np.nan], [np.nan], [0])


# Confusion matrix


def cell_colour(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The colour of a cell near its lower right corner, away from its texts."""
    _, _, x1, y1 = box
    return image[y1 - 8 : y1 - 3, x1 - 8 : x1 - 3].reshape(-1, 3).mean(axis=0)


def test_confusion_matrix_shades_cells_by_row_fraction():
    image = plots.confusion_matrix_plot(tp=90, fp=60, tn=140, fn=10)
    assert image.shape == (420, 480, 3) and image.dtype == np.uint8
    assert cv2.imencode(".png", image)[0]
    cells = plots._confusion_cells(480, 420)
    darkness = {name: -cell_colour(image, box).sum() for name, box in cells.items()}
    # Row fractions: tp 0.9, fn 0.1 (preterm row); fp 0.3, tn 0.7 (control row). (By
    # column they would be tp 0.6, fp 0.4, fn 0.07, tn 0.93: another order.)
    assert darkness["tp"] > darkness["tn"] > darkness["fp"] > darkness["fn"]
    assert cells["tp"][0] < cells["fn"][0] and cells["tp"][1] < cells["fp"][1]  # layout
    # Blue shades: blue channel highest.
    b, g, r = cell_colour(image, cells["tp"])
    assert b > g > r
    # Equal row fractions, equal shades: tp = fp = 0.3, fn = tn = 0.7 of their rows.
    image = plots.confusion_matrix_plot(tp=30, fp=60, tn=140, fn=70)
    colour = {name: cell_colour(image, box) for name, box in cells.items()}
    assert near(colour["tp"], colour["fp"], 2) and near(colour["fn"], colour["tn"], 2)
    assert colour["fn"].sum() < colour["tp"].sum() - 100


def test_confusion_matrix_with_an_empty_row_and_bad_counts():
    image = plots.confusion_matrix_plot(0, 3, 5, 0, size=(600, 500))
    assert image.shape == (500, 600, 3)
    cells = plots._confusion_cells(600, 500)
    assert near(cell_colour(image, cells["tp"]), (255, 251, 247), 3)  # empty row: lightest
    with pytest.raises(ValueError, match="fn=-1"):
        plots.confusion_matrix_plot(1, 2, 3, -1)
    with pytest.raises(ValueError, match=r"tp=1\.5"):
        plots.confusion_matrix_plot(1.5, 2, 3, 4)
    with pytest.raises(ValueError, match="tn=True"):
        plots.confusion_matrix_plot(1, 2, True, 4)
    whole = plots.confusion_matrix_plot(np.int64(0), 3.0, np.float32(5), 0, size=(600, 500))
    assert (whole == image).all()  # whole-number floats (e.g. from JSON) count as integers


# Training curves


def history(n: int = 6, keys: tuple[str, ...] = ()) -> dict[str, list[float]]:
    columns = {"epoch": [float(i) for i in range(n)]}
    for k, key in enumerate(keys):  # distinct curves, so that none hides another
        rising = "iou" in key or "auc" in key
        columns[key] = [
            (0.1 + 0.05 * k + 0.4 * i / n) if rising else (2.0 + k) / (i + 1) for i in range(n)
        ]
    return columns


def test_training_curves_two_panels_with_all_columns():
    keys = ("loss", "val_loss", "mask_loss", "val_mask_loss", "label_loss", "val_label_loss")
    keys += ("mask_iou", "val_mask_iou", "label_auc", "val_label_auc")
    image = plots.training_curves_plot(history(keys=keys))
    assert image.shape == (420, 900, 3) and cv2.imencode(".png", image)[0]
    left, right = image[:, :450], image[:, 450:]
    assert colour_mask(left, plots.PALETTE[0], 10).sum() > 100  # total loss only on the left
    assert colour_mask(right, plots.PALETTE[0], 10).sum() == 0
    assert colour_mask(right, plots.PALETTE[2], 10).sum() > 100  # mask IoU
    assert colour_mask(right, plots.PALETTE[1], 10).sum() > 100  # label AUC
    columns = np.nonzero(colour_mask(left, plots.PALETTE[0], 60).any(axis=0))[0]
    assert columns.max() - columns.min() > 250  # the epochs spread across the panel


def test_training_curves_draw_validation_dashed():
    values = [2.0, 1.5, 1.2, 1.0]
    train = plots.training_curves_plot({"loss": values})
    validation = plots.training_curves_plot({"val_loss": values})
    solid = colour_mask(train, plots.PALETTE[0], 60).sum()
    dashed = colour_mask(validation, plots.PALETTE[0], 60).sum()
    assert 0.3 * solid < dashed < 0.85 * solid


def test_training_curves_with_missing_columns():
    image = plots.training_curves_plot(history(keys=("loss", "val_loss")))
    assert image.shape == (420, 900, 3)
    assert colour_mask(image[:, 450:], plots.PALETTE[2], 10).sum() == 0  # "not recorded"
    only_metric = history(keys=("val_label_auc",))
    del only_metric["epoch"]
    image = plots.training_curves_plot(only_metric, size=(600, 300))
    assert image.shape == (300, 600, 3)
    assert colour_mask(image[:, 300:], plots.PALETTE[1], 40).sum() > 50
    with_nan = history(keys=("loss", "mask_iou"))
    with_nan["loss"][2] = math.nan
    assert plots.training_curves_plot(with_nan).shape == (420, 900, 3)
    one_epoch = plots.training_curves_plot(history(n=1, keys=("loss", "mask_iou")))
    assert one_epoch.shape == (420, 900, 3)


def test_training_curves_reject_bad_history():
    with pytest.raises(ValueError, match="columns \\['epoch', 'lr'\\]"):
        plots.training_curves_plot({"epoch": [0, 1], "lr": [1e-3, 1e-3]})
    with pytest.raises(ValueError, match="'loss': 2, 'val_loss': 3"):
        plots.training_curves_plot({"loss": [1, 2], "val_loss": [1, 2, 3]})
    with pytest.raises(ValueError, match="Received"):
        plots.training_curves_plot({"loss": []})


def test_read_history(tmp_path: Path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,1.5,2.0\n1,1.0,\n")
    result = plots.read_history(path)
    assert list(result) == ["epoch", "loss", "val_loss"]
    assert result["loss"] == [1.5, 1.0]
    assert result["val_loss"][0] == 2.0 and math.isnan(result["val_loss"][1])
    path.write_text("epoch,loss\n0,1.5\n1,oops\n")
    with pytest.raises(ValueError, match=r"line 3, column 'loss'.*'oops'"):
        plots.read_history(path)


# Segmentation overlays


def square_image() -> tuple[np.ndarray, np.ndarray]:
    """A float image 80 x 100 (dark gradient) with a white square [20:60, 30:70], its mask."""
    image = np.tile(np.linspace(0.0, 0.6, 100, dtype=np.float32), (80, 1))
    image[20:60, 30:70] = 1.0
    truth = np.zeros((80, 100), np.uint8)
    truth[20:60, 30:70] = 255
    return image, truth


def test_overlay_grid_outlines_truth_in_green_and_prediction_in_magenta():
    image, truth = square_image()
    image = np.dstack([image] * 3)
    image[20:60, 30:70] = (0.0, 1.0, 1.0)  # yellow (BGR), to find the square
    prediction = np.zeros((40, 50), np.float32)  # another resolution: half the image's
    prediction[5:25, 10:30] = 0.9  # the image's [10:50, 20:60]: 10 pixels up and left
    grid = plots.overlay_grid([("best IoU 0.95", image, truth, prediction)], tile=100)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and cv2.imencode(".png", grid)[0]
    width = grid.shape[1]
    green = np.argwhere(colour_mask(grid, plots.GREEN, 60))
    magenta = np.argwhere(colour_mask(grid, plots.MAGENTA, 60))
    yellow = np.argwhere(colour_mask(grid, (0, 255, 255), 30))
    assert len(green) > 100 and len(magenta) > 100
    assert (green[:, 1] > width / 3).all() and (green[:, 1] < 2 * width / 3).all()
    assert (magenta[:, 1] > 2 * width / 3).all()
    for points, shift in ((green, 0), (magenta, -10)):  # the outline of a 40-pixel square
        extent = points.max(axis=0) - points.min(axis=0)
        assert extent == pytest.approx([40, 40], abs=3)
        # ... around the yellow square (the truth) of the same tile, or 10 pixels up and left.
        square = yellow[np.abs(yellow[:, 1] - points[:, 1].mean()) < 50]
        assert points.min(axis=0) - square.min(axis=0) == pytest.approx([shift, shift], abs=2)


def test_overlay_grid_grows_with_rows_and_accepts_other_formats():
    image, truth = square_image()
    row = ("a", image, truth, truth / 255.0)
    one = plots.overlay_grid([row])
    two = plots.overlay_grid([row, row])
    three = plots.overlay_grid(
        [
            row,
            ("uint16", (image * 65535).astype(np.uint16), None, None),
            ("bgr", np.dstack([image] * 3), truth[..., None] > 0, None),
        ]
    )
    assert one.shape[1] == two.shape[1] == three.shape[1]
    assert two.shape[0] - one.shape[0] == three.shape[0] - two.shape[0] > 160
    assert plots.overlay_grid([row], tile=64).shape[0] < one.shape[0]


def test_overlay_grid_rejects_bad_input():
    image, truth = square_image()
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        plots.overlay_grid([("a", image * 255.0, truth, None)])
    with pytest.raises(ValueError, match="rows=\\[\\]"):
        plots.overlay_grid([])
    with pytest.raises(ValueError, match="shape \\(4, 5, 2\\)"):
        plots.overlay_grid([("a", np.zeros((4, 5, 2)), None, None)])
    with pytest.raises(ValueError, match="tile=8"):
        plots.overlay_grid([("a", image, truth, None)], tile=8)


def test_stacking_pads_to_equal_size():
    a = np.zeros((10, 20), np.uint8)
    b = np.zeros((30, 5, 3), np.uint8)
    row = plots.hstack_images([a, b], gap=2)
    assert row.shape == (30, 27, 3)
    assert (row[0, 0] == 255).all() and (row[10, 0] == 0).all()  # a centred vertically
    column = plots.vstack_images([a, b])
    assert column.shape == (40, 20, 3)
    with pytest.raises(ValueError, match="Received"):
        plots.hstack_images([])


# Dependencies


def test_plots_imports_neither_matplotlib_nor_tensorflow_nor_keras():
    # Its own imports: ``import cervixnet`` loads Keras, and Keras loads matplotlib itself when
    # it is installed, so loading the module cannot tell. matplotlib is not a dependency.
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported if name}
    assert not roots & {"matplotlib", "tensorflow", "keras"}
    # Its only cervixnet import is the analysis module, itself free of Keras and TensorFlow.
    assert {name for name in imported if name and name.startswith("cervixnet")} == {
        "cervixnet.analysis"
    }
