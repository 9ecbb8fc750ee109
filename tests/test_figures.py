"""Report figures (``cervixnet.figures``): their data against scikit-learn, their files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from cervixnet import clinical, figures


def _scores(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities that separate them imperfectly, and two images per patient."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(float)
    probabilities = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)
    patients = np.repeat(np.arange(n // 2), 2)
    return labels, probabilities, patients


def _point(axes, label_start: str) -> tuple[float, float]:
    (line,) = [line for line in axes.lines if line.get_label().startswith(label_start)]
    x, y = line.get_data()
    return float(x[0]), float(y[0])


def test_roc_curve_is_scikit_learns_with_the_band_and_the_operating_point():
    labels, probabilities, patients = _scores()
    threshold = float(np.median(probabilities))
    figure = figures.roc_figure(labels, probabilities, threshold, groups=patients)
    axes = figure.axes[0]
    (curve,) = [line for line in axes.lines if line.get_label().startswith("ROC")]
    fpr, tpr, _ = roc_curve(labels, probabilities)
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    predicted = probabilities >= threshold
    expected = (predicted[labels == 0].mean(), predicted[labels == 1].mean())
    assert _point(axes, "operating point") == pytest.approx(expected)
    (band,) = [c for c in axes.collections if isinstance(c, PolyCollection)]
    assert "bootstrap over patients" in band.get_label()
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() >= 0 and vertices[:, 1].max() <= 1
    assert "false-positive rate" in axes.get_xlabel() and "sensitivity" in axes.get_ylabel()
    assert "AUC" in curve.get_label()


def test_roc_band_holds_the_curve_and_widens_with_fewer_patients():
    labels, probabilities, patients = _scores(200)
    many = figures._roc_band(labels, probabilities, patients, 100, 0)
    few = figures._roc_band(labels[:40], probabilities[:40], patients[:40], 100, 0)
    assert (many[:, 0] <= many[:, 1]).all()
    fpr, tpr, _ = roc_curve(labels, probabilities)
    inside = (np.interp(figures._BAND_GRID, fpr, tpr) >= many[:, 0] - 1e-9) & (
        np.interp(figures._BAND_GRID, fpr, tpr) <= many[:, 1] + 1e-9
    )
    assert inside.mean() > 0.9
    assert np.mean(few[:, 1] - few[:, 0]) > np.mean(many[:, 1] - many[:, 0])


def test_precision_recall_curve_and_operating_point():
    labels, probabilities, _ = _scores()
    threshold = 0.6
    axes = figures.precision_recall_figure(labels, probabilities, threshold).axes[0]
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    (curve,) = [line for line in axes.lines if line.get_label().startswith("precision-recall")]
    np.testing.assert_allclose(curve.get_xdata(), recall)
    np.testing.assert_allclose(curve.get_ydata(), precision)
    predicted = probabilities >= threshold
    expected = (predicted[labels == 1].mean(), labels[predicted].mean())
    assert _point(axes, "operating point") == pytest.approx(expected)
    assert "\N{GREATER-THAN OR EQUAL TO} 0.6" in axes.get_legend().get_texts()[-1].get_text()


def test_confusion_matrix_counts_probability_at_the_threshold_as_preterm():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1.0])
    probabilities = np.array([0.9, 0.5, 0.2, 0.5, 0.1, 0.3, 0.7, 0.6])
    axes = figures.confusion_matrix_figure(labels, probabilities, 0.5).axes[0]
    texts = [t.get_text() for t in axes.texts]
    # Rows true preterm, control; columns predicted preterm, control: p >= 0.5 is preterm.
    expected = confusion_matrix(labels, probabilities >= 0.5, labels=[1, 0])
    assert expected.tolist() == [[3, 1], [2, 2]]
    assert texts == ["3\n(75%)", "1\n(25%)", "2\n(50%)", "2\n(50%)"]
    ticks = [t.get_text() for t in axes.get_xticklabels()]
    assert ticks == ["preterm", "control"] and axes.get_ylabel() == "true"


def test_calibration_curve_and_its_count_histogram():
    labels, probabilities, _ = _scores(300)
    figure = figures.calibration_figure(labels, probabilities, n_bins=10)
    curve_axes, count_axes = figure.axes
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10)
    (curve,) = [line for line in curve_axes.lines if line.get_label().startswith("model")]
    np.testing.assert_allclose(curve.get_xdata(), predicted)
    np.testing.assert_allclose(curve.get_ydata(), observed)
    brier = np.mean((probabilities - labels) ** 2)
    assert f"Brier {brier:.3f}" in curve.get_label()
    heights = [patch.get_height() for patch in count_axes.patches]
    expected, _ = np.histogram(probabilities, bins=np.linspace(0, 1, 11))
    assert heights == expected.tolist() and sum(heights) == 300


def test_training_curves_count_epochs_from_one_and_dash_validation(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,loss,val_loss,mask_iou,val_mask_iou,iou\n0,1,1.2,0.5,0.4,0.1\n1,0.8,,0.6,0.5,0.2\n"
    )
    history = figures.read_history(path)
    assert np.isnan(history["val_loss"][1])
    loss_axes, score_axes = figures.training_curves_figure(history).axes
    labels = {line.get_label(): line for line in loss_axes.lines + score_axes.lines}
    assert sorted(labels) == [
        "mask IoU (train)",
        "mask IoU (val)",
        "total loss (train)",
        "total loss (val)",
    ]  # fmt: skip  (iou is left out when mask_iou is there)
    assert labels["total loss (train)"].get_xdata().tolist() == [1.0, 2.0]
    assert labels["mask IoU (val)"].get_linestyle() == "--"
    assert labels["mask IoU (val)"].get_color() == labels["mask IoU (train)"].get_color()
    losses_only = figures.training_curves_figure({"loss": [1.0, 0.5]})
    assert any(t.get_text() == "not recorded" for t in losses_only.axes[1].texts)
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss\n0,high\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2, column 'loss'.*'high'"):
        figures.read_history(bad)
    with pytest.raises(ValueError, match="same number"):
        figures.training_curves_figure({"loss": [1.0], "val_loss": [1.0, 2.0]})
    with pytest.raises(ValueError, match="none of the columns"):
        figures.training_curves_figure({"lr": [0.1]})


def test_overlays_keep_each_image_at_its_own_pixels():
    rng = np.random.default_rng(1)
    truth = np.zeros((40, 60))
    truth[10:30, 15:45] = 1
    rows = [("worst: IoU 0.5", rng.random((40, 60, 1)), truth, truth * 0.9),
            ("best: IoU 1.0", rng.random((25, 30)), None, np.zeros((25, 30)))]  # fmt: skip
    figure = figures.overlay_figure(rows)
    first, second = figure.axes[:2]
    assert first.images[0].get_array().shape == (40, 60)
    assert second.images[0].get_array().shape == (25, 30)
    assert first.get_title() == "worst: IoU 0.5"
    colours = [tuple(c.get_edgecolor()[0][:3]) for c in first.collections]
    assert colours == [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]  # reference green, prediction red
    assert len(second.collections) == 0  # no reference, an empty prediction: no outline
    with pytest.raises(ValueError, match="at least one"):
        figures.overlay_figure([])


def test_saved_files_are_png_and_pdf_with_truetype_fonts_and_identical_on_a_rerun(tmp_path):
    labels, probabilities, patients = _scores()
    written = []
    for run in ("a", "b"):
        figure = figures.roc_figure(labels, probabilities, 0.5, groups=patients)
        written.append(figures.save_figure(figure, tmp_path / run / "roc"))
    first, second = written
    assert [p.name for p in first] == ["roc.png", "roc.pdf"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    pdf = first[1].read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType embedded, no Type 3
    assert b"CreationDate" not in pdf
    assert first[0].read_bytes().startswith(b"\x89PNG")


def test_bland_altman_lines_are_the_agreement_figures():
    rng = np.random.default_rng(4)
    reference = rng.uniform(100, 350, 80)
    measured = reference + 2.0 + rng.normal(0, 4.0, 80)
    measured[3] = np.nan  # left out, as in agreement
    figure = figures.bland_altman_figure(measured, reference, quantity="head circumference")
    axes = figure.axes[0]
    expected = clinical.agreement(measured, reference)
    lines = {line.get_label(): line for line in axes.lines}
    x, y = lines["scans"].get_data()
    both = np.isfinite(measured)
    np.testing.assert_allclose(x, (measured[both] + reference[both]) / 2)
    np.testing.assert_allclose(y, measured[both] - reference[both])
    assert lines["bias"].get_ydata() == pytest.approx([expected["bias"]] * 2)
    assert lines["+1.96 SD"].get_ydata() == pytest.approx([expected["loa_high"]] * 2)
    assert lines["\N{MINUS SIGN}1.96 SD"].get_ydata() == pytest.approx([expected["loa_low"]] * 2)
    texts = {text.get_text() for text in axes.texts}
    assert f"bias {expected['bias']:.2f} mm" in texts
    assert f"+1.96 SD {expected['loa_high']:.2f} mm" in texts
    low = f"{expected['loa_low']:.2f}".replace("-", "\N{MINUS SIGN}")
    assert f"\N{MINUS SIGN}1.96 SD {low} mm" in texts
    assert axes.get_xlabel().endswith("(mm)") and axes.get_ylabel().endswith("(mm)")
    assert "head circumference" in axes.get_title() and "n = 79" in axes.get_title()
    one = figures.bland_altman_figure([3.0], [1.0], unit="cm").axes[0]
    assert [line.get_label() for line in one.lines] == ["scans", "bias"]  # no SD from one pair
    with pytest.raises(ValueError, match="both finite"):
        figures.bland_altman_figure([np.nan], [1.0])


def test_decision_curve_lines_are_the_net_benefits():
    labels, probabilities, _ = _scores(200)
    curves = clinical.decision_curve(labels, {"model": probabilities, "coin": np.full(200, 0.5)})
    axes = figures.decision_curve_figure(curves).axes[0]
    lines = {line.get_label(): line for line in axes.lines}
    assert list(lines) == ["model", "coin", "treat all", "treat none"]
    thresholds = curves["thresholds"]
    for name, probability in (("model", probabilities), ("coin", np.full(200, 0.5))):
        np.testing.assert_allclose(lines[name].get_xdata(), thresholds)
        np.testing.assert_allclose(
            lines[name].get_ydata(), clinical.net_benefit(labels, probability, thresholds)
        )
    np.testing.assert_allclose(lines["treat all"].get_ydata(), curves["treat_all"])
    assert not np.any(lines["treat none"].get_ydata())
    bottom, top = axes.get_ylim()
    assert -0.1 < bottom < 0 and labels.mean() < top < 1.2 * labels.mean()
    assert axes.get_xlabel() == "threshold probability" and axes.get_ylabel() == "net benefit"
