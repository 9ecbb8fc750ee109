import numpy as np
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
    assert cls["auc"] == expected
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
