import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cervixnet.evaluation import format_table, split_metrics


def _predictions(joint: bool = True):
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 8, 8), np.float32)
    truth[:, 2:6, 2:6] = 1.0
    prob = np.clip(truth + rng.normal(0, 0.3, truth.shape), 0, 1).astype(np.float32)
    result = {
        "mask_true": truth,
        "has_mask": np.array([True, True, True, True, True, False]),
        "mask_prob": prob,
        "label": np.array([0, 1, 0, 1, np.nan, 0], dtype=float),
    }
    if joint:
        result["probability"] = np.array([0.2, 0.7, 0.6, 0.4, 0.9, 0.1], np.float32)
    return result


def test_split_metrics_skips_rows_without_mask_or_label():
    predictions = _predictions()
    figures = split_metrics(predictions, risk=[0.1, 0.8, 0.3, 0.6, 0.5, 0.2])
    assert figures["n_images"] == 6
    assert figures["segmentation"]["n_images"] == 5
    cls = figures["classification"]
    assert cls["n_images"] == 5 and cls["n_positive"] == 2
    known = ~np.isnan(predictions["label"])
    expected = roc_auc_score(predictions["label"][known], predictions["probability"][known])
    assert cls["auc"] == pytest.approx(expected, abs=1e-12)
    # The report's figures, one convention: 0.6 >= 0.6 is preterm; a ratio over no case is null.
    at = split_metrics(predictions, threshold=0.6)["classification"]
    assert at["confusion_matrix"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 1}
    controls = {**predictions, "label": np.array([0, 0, 0, 0, np.nan, 0], dtype=float)}
    alone = split_metrics(controls, threshold=0.5)["classification"]
    assert alone["auc"] is None and alone["recall"] is None and alone["specificity"] == 0.6
    # The generator's risk ranks both preterm cases above all three controls.
    assert cls["best_auc"] == 1.0


def test_segmentation_only_has_no_classification():
    figures = split_metrics(_predictions(joint=False))
    assert "classification" not in figures
    assert 0.0 < figures["segmentation"]["iou_mean"] <= 1.0


def test_format_table_lists_splits_and_columns():
    figures = {"test": split_metrics(_predictions(), risk=[0.1, 0.8, 0.3, 0.6, 0.5, 0.2])}
    table = format_table(figures)
    header, rule, row = table.splitlines()
    assert header.split()[:4] == ["split", "images", "IoU", "Dice"]
    assert "best AUC" in header and set(rule) <= {"-", " "}
    assert row.startswith("test") and "±" in row and "1.000" in row


# Scores at each scan's own size, on a data set of non-square scans of two shapes.


def _prepared(tmp_path, resize: str, spacing: float | None = None):
    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.prepare import prepare
    from tests.conftest import rewrite_manifest, write_tiny_dataset

    write_tiny_dataset(tmp_path / "data", n_patients=3)  # 48 x 64 and 56 x 64 scans
    if spacing is not None:

        def add_spacing(fields, rows):
            for row in rows:
                row["pixel_spacing_mm"] = str(spacing)
            return [*fields, "pixel_spacing_mm"], rows

        rewrite_manifest(tmp_path / "data" / "manifest.csv", add_spacing)
    config = load_config(overrides={"data.image_size": [32, 32], "data.resize": resize})
    return read_manifest(prepare(tmp_path / "data", tmp_path / f"prepared-{resize}", config))


def test_masks_are_scored_at_each_scans_own_size(tmp_path):
    import cv2

    from cervixnet.evaluation import segmentation_scores, source_size_pairs

    manifest = _prepared(tmp_path, "letterbox")
    indices = list(range(len(manifest.records)))
    # The prepared masks themselves as predictions: what a perfect network would output.
    fitted = np.stack(
        [cv2.imread(str(r.mask), cv2.IMREAD_GRAYSCALE) / 255.0 for r in manifest.records]
    ).astype(np.float32)
    pairs = source_size_pairs(manifest, indices, fitted, "letterbox")
    for (truth, prob), record in zip(pairs, manifest.records, strict=True):
        width, height = (int(v) for v in record.extra["source_size"].split("x"))
        assert truth.shape == prob.shape == (height, width)  # the scan's, not 32 x 32
    scores = segmentation_scores(pairs)
    # Only the round trip through the 32 x 32 input costs anything: the outline moves by
    # about a source pixel (48 / 32 = 1.5 source pixels an input pixel, a 14 x 8 ellipse).
    assert 0.8 < scores["iou"].min() < 1.0
    assert np.all(scores["hd95"] <= 3.0) and np.all(scores["assd"] < 1.5)
    # Scored at the input size instead, the same predictions are perfect: a different figure.
    at_input = segmentation_scores([(t > 0.5, t) for t in fitted])
    np.testing.assert_array_equal(at_input["iou"], 1.0)


def test_the_letterbox_keeps_the_scans_shape_and_stretch_does_not(tmp_path):
    import cv2

    letterbox = _prepared(tmp_path, "letterbox")
    stretch = _prepared(tmp_path, "stretch")
    record = letterbox.records[0]  # a 48 x 64 scan into 32 x 32: 24 x 32 content, 4 rows pad
    image = cv2.imread(str(record.image), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (32, 32)
    assert not image[:4].any() and not image[-4:].any() and image[4:28].any()
    squashed = cv2.imread(str(stretch.records[0].image), cv2.IMREAD_GRAYSCALE)
    assert squashed[:4].any()


def test_split_metrics_reports_the_source_size_scores():
    predictions = _predictions()
    scores = {
        "iou": np.array([0.9, 0.8, 1.0, 0.7, 0.6, np.nan]),
        "dice": np.array([0.95, 0.9, 1.0, 0.8, 0.75, np.nan]),
        "hd95": np.array([1.0, 2.0, np.nan, 3.0, 4.0, np.nan]),
        "assd": np.array([0.5, 1.0, np.nan, 1.5, 2.0, np.nan]),
    }
    segmentation = split_metrics(predictions, scores=scores)["segmentation"]
    assert segmentation["scored_at"] == "source size"
    assert segmentation["iou_mean"] == np.mean([0.9, 0.8, 1.0, 0.7, 0.6])
    assert segmentation["hd95_mean"] == np.mean([1.0, 2.0, 3.0, 4.0])  # NaN: an empty mask
    assert "HD95 px" in format_table({"test": {"n_images": 6, "segmentation": segmentation}})


def test_an_augmented_copy_is_scored_against_its_augmented_mask(tmp_path):
    from cervixnet.evaluation import source_size_pairs

    manifest = _prepared(tmp_path, "letterbox")
    augmented = np.zeros((2, 32, 32), np.float32)
    augmented[1, 4:20, 6:30] = 1.0  # the copy's mask after its augmentation
    prob = np.full((2, 32, 32), 0.25, np.float32)
    original, copy = source_size_pairs(
        manifest, [0, 0], prob, "letterbox", copies=[False, True], masks_true=augmented
    )
    assert original[0].shape == (48, 64)  # the scan's own size and mask
    np.testing.assert_array_equal(copy[0], augmented[1] > 0.5)  # no scan holds a copy's pixels
    np.testing.assert_array_equal(copy[1], prob[1])


def test_distances_are_in_mm_where_the_manifest_gives_the_spacing(tmp_path):
    import cv2

    from cervixnet.evaluation import (
        distance_unit,
        pair_spacings,
        segmentation_scores,
        source_size_pairs,
    )

    manifest = _prepared(tmp_path, "letterbox", spacing=0.25)
    assert distance_unit(manifest) == "mm"
    indices = list(range(len(manifest.records)))
    spacings = pair_spacings(manifest, indices)
    assert set(spacings) == {(0.25, 0.25)}  # the scan's own, not the 32 x 32 input's
    shifted = np.stack(
        [np.roll(cv2.imread(str(r.mask), cv2.IMREAD_GRAYSCALE) / 255.0, 2, axis=1)
         for r in manifest.records]
    ).astype(np.float32)  # fmt: skip
    pairs = source_size_pairs(manifest, indices, shifted, "letterbox")
    in_pixels = segmentation_scores(pairs)
    in_mm = segmentation_scores(pairs, spacings=spacings)
    np.testing.assert_allclose(in_mm["hd95"], 0.25 * in_pixels["hd95"], atol=1e-5)
    np.testing.assert_allclose(in_mm["assd"], 0.25 * in_pixels["assd"], atol=1e-5)
    assert np.all(in_pixels["hd95"] > 0)
    summary = split_metrics(_predictions_for(len(indices)), scores=in_mm, distance_unit="mm")
    assert summary["segmentation"]["distance_unit"] == "mm"
    assert "HD95 mm" in format_table({"test": summary})
    with pytest.raises(ValueError, match="every pair a spacing or none"):
        segmentation_scores(pairs, spacings=[None, *spacings[1:]])
    assert distance_unit(_prepared(tmp_path / "plain", "letterbox")) == "px"


def _predictions_for(n: int) -> dict[str, np.ndarray]:
    return {"has_mask": np.ones(n, bool), "label": np.full(n, np.nan)}
