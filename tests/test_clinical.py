"""Tests of cervixnet.clinical against hand-computed cases, scikit-learn and brute force."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cervixnet import clinical
from cervixnet.errors import ConfigError


def _correlated(seed: int, n: int = 200, decimals: int | None = None):
    """Labels and two scores that both carry the label and share noise (correlated AUCs)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.float64)
    shared = rng.normal(size=n)
    a = 1.0 * labels + shared + 0.7 * rng.normal(size=n)
    b = 0.6 * labels + shared + 0.9 * rng.normal(size=n)
    if decimals is not None:  # many ties
        a, b = a.round(decimals), b.round(decimals)
    return labels, a, b


def _structural_components(labels, scores_a, scores_b):
    """DeLong et al. (1988) by their definitions, O(m n): psi(X, Y) = 1, 1/2, 0 for X > Y,
    X = Y, X < Y; V10(X_i) = mean_j psi(X_i, Y_j), V01(Y_j) = mean_i psi(X_i, Y_j);
    S = S10 / m + S01 / n with S10, S01 the covariance matrices (divisor m - 1, n - 1)."""
    positive = labels == 1
    v10, v01, aucs = [], [], []
    for scores in (scores_a, scores_b):
        x, y = scores[positive], scores[~positive]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = positive.sum(), (~positive).sum()
    s10 = np.cov(np.array(v10))  # rows are variables
    s01 = np.cov(np.array(v01))
    return np.array(aucs), s10 / m + s01 / n


# agreement


def test_agreement_on_hand_computed_numbers():
    measured = [10.0, 12.0, 14.0, 20.0, np.nan, 7.0]
    reference = [9.0, 13.0, 11.0, 20.0, 5.0, np.inf]
    figures = clinical.agreement(measured, reference)
    # differences 1, -1, 3, 0 (the NaN and the inf rows are left out)
    sd = math.sqrt((0.25**2 + 1.75**2 + 2.25**2 + 0.75**2) / 3)
    assert figures["n"] == 4
    assert figures["mae"] == pytest.approx(1.25)
    assert figures["bias"] == pytest.approx(0.75)
    assert figures["sd"] == pytest.approx(sd)
    assert figures["loa_low"] == pytest.approx(0.75 - 1.96 * sd)
    assert figures["loa_high"] == pytest.approx(0.75 + 1.96 * sd)
    assert figures["p95_abs"] == pytest.approx(2.7)  # |d| sorted 0, 1, 1, 3: 1 + 0.85 * 2
    assert list(figures) == list(clinical.AGREEMENT_FIGURES)


def test_agreement_is_nan_where_undefined_and_checks_sizes():
    one = clinical.agreement([3.0, np.nan], [1.0, 2.0])
    assert one["n"] == 1 and one["bias"] == 2.0 and one["mae"] == 2.0
    assert math.isnan(one["sd"]) and math.isnan(one["loa_low"]) and math.isnan(one["loa_high"])
    none = clinical.agreement([np.nan], [1.0])
    assert none["n"] == 0 and all(math.isnan(v) for k, v in none.items() if k != "n")
    with pytest.raises(ValueError, match=r"same number.*measured.size=2, reference.size=3"):
        clinical.agreement([1, 2], [1, 2, 3])


def test_agreement_intervals_hold_the_values_and_have_the_expected_width():
    rng = np.random.default_rng(0)
    reference = rng.uniform(150, 350, 400)
    measured = reference + 1.0 + rng.normal(0, 2.0, 400)
    measured[:5] = np.nan
    patients = np.arange(400)
    table = clinical.agreement_with_intervals(
        measured, reference, patients, n_resamples=400, seed=3
    )
    point = clinical.agreement(measured, reference)
    assert list(table) == list(clinical.AGREEMENT_FIGURES)
    for key in clinical.AGREEMENT_FIGURES[1:]:
        assert table[key]["value"] == point[key]
        assert table[key]["low"] < table[key]["value"] < table[key]["high"]
    assert table["n"]["value"] == 395 and math.isnan(table["n"]["low"])
    # The bias's interval is about bias +/- 1.96 sd / sqrt(n).
    width = table["bias"]["high"] - table["bias"]["low"]
    assert width == pytest.approx(2 * 1.96 * point["sd"] / math.sqrt(395), rel=0.2)
    again = clinical.agreement_with_intervals(
        measured, reference, patients, n_resamples=400, seed=3
    )
    assert again == table


def test_agreement_intervals_resample_patients_not_rows():
    # Each patient has ten identical rows: resampling rows would make intervals far too narrow.
    rng = np.random.default_rng(1)
    differences = rng.normal(0, 2.0, 30)
    measured = np.repeat(100 + differences, 10)
    reference = np.full(300, 100.0)
    by_patient = clinical.agreement_with_intervals(
        measured, reference, np.repeat(np.arange(30), 10), n_resamples=300
    )
    by_row = clinical.agreement_with_intervals(measured, reference, np.arange(300), n_resamples=300)
    width = {k: t["bias"]["high"] - t["bias"]["low"] for k, t in (("p", by_patient), ("r", by_row))}
    assert width["p"] > 2.5 * width["r"]  # about sqrt(10) times wider


# DeLong


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 1), (2, 0)])
def test_delong_aucs_equal_sklearn_and_variances_equal_the_1988_definitions(seed, decimals):
    labels, a, b = _correlated(seed, n=150, decimals=decimals)
    result = clinical.delong_test(labels, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(roc_auc_score(labels, b), abs=1e-12)
    aucs, covariance = _structural_components(labels, a, b)
    np.testing.assert_allclose(aucs, [result["auc_a"], result["auc_b"]], rtol=0, atol=1e-12)
    assert result["var_a"] == pytest.approx(covariance[0, 0], rel=0, abs=1e-10)
    assert result["var_b"] == pytest.approx(covariance[1, 1], rel=0, abs=1e-10)
    assert result["covariance"] == pytest.approx(covariance[0, 1], rel=0, abs=1e-10)
    se = math.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    assert result["se"] == pytest.approx(se, rel=1e-9)
    z = (aucs[0] - aucs[1]) / se
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    assert result["n_positive"] + result["n_negative"] == 150


def test_delong_on_a_tiny_hand_computed_case():
    # Positives 0.9, 0.5; negatives 0.5, 0.1: psi = [[1, 1], [0.5, 1]], AUC 3.5 / 4.
    labels = [1, 1, 0, 0]
    interval = clinical.auc_interval(labels, [0.9, 0.5, 0.5, 0.1])
    # V10 = (1, 0.75): var 0.03125; V01 = (0.75, 1): var 0.03125; S = 0.03125 / 2 * 2.
    assert interval["auc"] == 0.875
    assert interval["se"] == pytest.approx(math.sqrt(0.03125))
    assert interval["high"] == 1.0  # clipped
    assert interval["low"] == pytest.approx(0.875 - norm.ppf(0.975) * math.sqrt(0.03125))


def test_delong_standard_error_agrees_with_a_paired_bootstrap():
    labels, a, b = _correlated(7, n=200)
    result = clinical.delong_test(labels, a, b)
    positive = np.flatnonzero(labels == 1)
    negative = np.flatnonzero(labels == 0)
    rng = np.random.default_rng(11)
    resamples = 2000
    # Resampling positives and negatives separately, as DeLong's variance is conditional on m, n.
    rows = np.concatenate(
        [rng.choice(positive, (resamples, positive.size)),
         rng.choice(negative, (resamples, negative.size))], axis=1,
    )  # fmt: skip
    m, n = positive.size, negative.size

    def aucs(scores):
        ranks = rankdata(scores[rows], axis=1)
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)

    auc_a, auc_b = aucs(a), aucs(b)
    assert np.std(auc_a - auc_b, ddof=1) == pytest.approx(result["se"], rel=0.1)
    assert np.std(auc_a, ddof=1) == pytest.approx(math.sqrt(result["var_a"]), rel=0.1)
    assert np.cov(auc_a, auc_b)[0, 1] == pytest.approx(result["covariance"], rel=0.2)
    assert result["covariance"] > 0  # the shared noise correlates the AUCs


def test_delong_of_identical_predictors_is_no_difference():
    labels, a, _ = _correlated(3)
    result = clinical.delong_test(labels, a, a.copy())
    assert result["difference"] == 0.0 and result["se"] == 0.0
    assert result["z"] == 0.0 and result["p_value"] == 1.0
    # A monotone transform has the same ranks, so the same AUC and no difference either.
    assert clinical.delong_test(labels, a, np.exp(a))["p_value"] == 1.0


def test_delong_drops_nan_labels_and_rejects_invalid_input():
    labels, a, b = _correlated(4, n=60)
    with_unknown = np.append(labels, [np.nan, np.nan])
    padded_a, padded_b = np.append(a, [5.0, np.nan]), np.append(b, [-5.0, 0.0])
    assert clinical.delong_test(with_unknown, padded_a, padded_b) == clinical.delong_test(
        labels, a, b
    )
    with pytest.raises(ValueError, match=r"both classes.*Received: 0 positive and 60"):
        clinical.delong_test(np.zeros(60), a, b)
    with pytest.raises(ValueError, match=r"same number.*labels.size=60, scores_b.size=59"):
        clinical.delong_test(labels, a, b[:-1])
    with pytest.raises(ValueError, match=r"`scores_a` must be finite.*Received: 1"):
        clinical.delong_test(labels, np.where(np.arange(60) == 3, np.nan, a), b)
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        clinical.delong_test(np.where(np.arange(60) == 0, 2.0, labels), a, b)
    with pytest.raises(ValueError, match="confidence"):
        clinical.auc_interval(labels, a, confidence=1.0)


def test_oriented_negates_a_marker_whose_low_values_mean_positive():
    rng = np.random.default_rng(5)
    labels = (rng.random(100) < 0.3).astype(float)
    length = 35 - 8 * labels + rng.normal(0, 5, 100)  # a short cervix means preterm
    length[0] = np.nan
    values, sign = clinical.oriented(labels, length)
    assert sign == -1
    np.testing.assert_array_equal(values, -length)  # NaN stays NaN
    known = np.isfinite(length)
    assert roc_auc_score(labels[known], values[known]) > 0.5
    kept, sign = clinical.oriented(labels, -length)
    assert sign == 1 and np.array_equal(kept, -length, equal_nan=True)


# compare_predictors


def test_compare_predictors_reports_each_auc_and_every_pair_in_order():
    labels, a, b = _correlated(8, n=160)
    c = a + b
    patients = np.repeat(np.arange(80), 2)
    predictors = {"model": a, "marker": b, "both": c}
    result = clinical.compare_predictors(labels, predictors, patients, n_resamples=300, seed=1)
    json.loads(json.dumps(result))  # plain Python numbers only
    assert (result["n"], result["n_patients"]) == (160, 80)
    assert result["n_positive"] == int(labels.sum())
    assert list(result["predictors"]) == ["model", "marker", "both"]
    for name, scores in predictors.items():
        row = result["predictors"][name]
        assert row["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        interval = clinical.auc_interval(labels, scores)
        assert (row["se"], row["delong_low"], row["delong_high"]) == pytest.approx(
            (interval["se"], interval["low"], interval["high"])
        )
        assert row["bootstrap_low"] < row["auc"] < row["bootstrap_high"]
        # The patient bootstrap and DeLong give intervals of a similar width.
        bootstrap = row["bootstrap_high"] - row["bootstrap_low"]
        assert bootstrap == pytest.approx(row["delong_high"] - row["delong_low"], rel=0.35)
    pairs = [(row["a"], row["b"]) for row in result["comparisons"]]
    assert pairs == [("model", "marker"), ("model", "both"), ("marker", "both")]
    first = result["comparisons"][0]
    expected = clinical.delong_test(labels, a, b)
    for key in ("difference", "se", "z", "p_value", "var_a", "var_b", "covariance"):
        assert first[key] == pytest.approx(expected[key])
    assert first["bootstrap_low"] < first["difference"] < first["bootstrap_high"]
    again = clinical.compare_predictors(labels, predictors, patients, n_resamples=300, seed=1)
    assert again == result


def test_compare_predictors_leaves_out_unknown_labels_with_their_patients():
    labels, a, b = _correlated(9, n=80)
    patients = np.arange(80)
    labels[:10] = np.nan
    result = clinical.compare_predictors(labels, {"a": a, "b": b}, patients, n_resamples=50)
    assert (result["n"], result["n_patients"]) == (70, 70)
    with pytest.raises(ValueError, match="at least one"):
        clinical.compare_predictors(labels, {}, patients)
    with pytest.raises(ValueError, match="one patient id per row"):
        clinical.compare_predictors(labels, {"a": a}, patients[:-1])


# Decision curves


def test_net_benefit_on_a_hand_computed_case():
    labels = [1, 1, 0, 0, 1, 0, np.nan]
    probabilities = [0.9, 0.4, 0.6, 0.2, 0.7, 0.1, 0.8]
    benefit = clinical.net_benefit(labels, probabilities, [0.0, 0.4, 0.5, 0.6, 0.95])
    expected = [
        3 / 6 - 3 / 6 * 0.0,  # everyone treated, no weight on false positives
        3 / 6 - 1 / 6 * 0.4 / 0.6,  # p = 0.4 >= 0.4 is treated
        2 / 6 - 1 / 6 * 1.0,
        2 / 6 - 1 / 6 * 0.6 / 0.4,  # p = 0.6 >= 0.6 is treated
        0.0,
    ]
    np.testing.assert_allclose(benefit, expected)
    with pytest.raises(ValueError, match=r"\[0, 1\).*e.g. 1 outside"):
        clinical.net_benefit(labels, probabilities, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clinical.net_benefit(labels, [1.5, 0, 0, 0, 0, 0, 0], [0.5])


def test_decision_curve_has_treat_all_and_treat_none():
    rng = np.random.default_rng(2)
    labels = (rng.random(300) < 0.3).astype(float)
    good = np.clip(0.5 * labels + 0.5 * rng.random(300), 0, 1)
    poor = rng.random(300)
    curves = clinical.decision_curve(labels, {"good": good, "poor": poor})
    thresholds = curves["thresholds"]
    np.testing.assert_allclose(thresholds, np.linspace(0.01, 0.99, 99))
    prevalence = labels.mean()
    assert curves["prevalence"] == pytest.approx(prevalence) and curves["n"] == 300
    expected_all = prevalence - (1 - prevalence) * thresholds / (1 - thresholds)
    np.testing.assert_allclose(curves["treat_all"], expected_all)
    np.testing.assert_allclose(
        curves["treat_all"], clinical.net_benefit(labels, np.ones(300), thresholds)
    )
    assert not curves["treat_none"].any() and curves["treat_none"].shape == thresholds.shape
    assert list(curves["net_benefit"]) == ["good", "poor"]
    np.testing.assert_allclose(
        curves["net_benefit"]["good"], clinical.net_benefit(labels, good, thresholds)
    )
    # A useful model beats both default strategies at a moderate threshold.
    at = np.searchsorted(thresholds, 0.3)
    assert curves["net_benefit"]["good"][at] > max(curves["treat_all"][at], 0.0)
    with pytest.raises(ValueError, match="predictor 'poor'"):
        clinical.decision_curve(labels, {"good": good, "poor": poor + 1})


# The combined logistic model


def _clinical_data(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=n)
    length = rng.normal(30, 8, n)
    logit = -0.5 + 1.2 * image - 0.15 * (length - 30)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return labels, {"image": image, "length": length}


def test_combined_model_recovers_the_signs_and_predicts_as_scikit_learn():
    labels, features = _clinical_data(0)
    model = clinical.fit_combined(labels, features)
    assert model.feature_names == ("image", "length")
    image, length = model.coefficients
    assert image > 0.5 and length < -0.5  # per SD: 1.2 * 1 and -0.15 * 8
    assert model.means[1] == pytest.approx(np.mean(features["length"]))
    assert model.scales[1] == pytest.approx(np.std(features["length"]))
    x = np.column_stack([features["image"], features["length"]])
    reference = LogisticRegression(C=1.0).fit((x - x.mean(0)) / x.std(0), labels)
    np.testing.assert_allclose(
        model.predict_proba(features), reference.predict_proba((x - x.mean(0)) / x.std(0))[:, 1],
        rtol=1e-4,
    )  # fmt: skip
    probability = model.predict_proba({**features, "unused": np.zeros(400)})
    assert roc_auc_score(labels, probability) > roc_auc_score(labels, features["image"])


def test_combined_model_leaves_out_incomplete_rows_and_refuses_too_few():
    labels, features = _clinical_data(1, n=120)
    model = clinical.fit_combined(labels, features)
    padded = clinical.fit_combined(
        np.append(labels, [np.nan, 1.0, 0.0]),
        {"image": np.append(features["image"], [1.0, np.nan, 2.0]),
         "length": np.append(features["length"], [30.0, 20.0, np.inf])},
    )  # fmt: skip
    assert padded == model
    with pytest.raises(ValueError, match=r">= 10 rows.*Received: 9 such rows"):
        clinical.fit_combined(labels[:9], {k: v[:9] for k, v in features.items()})
    with pytest.raises(ValueError, match=r"both classes.*0 positive"):
        clinical.fit_combined(np.zeros(120), features)
    with pytest.raises(ValueError, match=r"vary.*\['length'\]"):
        clinical.fit_combined(labels, {**features, "length": np.full(120, 30.0)})
    with pytest.raises(ValueError, match="`C`"):
        clinical.fit_combined(labels, features, C=0.0)
    unpenalised = clinical.fit_combined(labels, features, C=math.inf)
    assert abs(unpenalised.coefficients[0]) > abs(model.coefficients[0])  # no shrinkage


def test_combined_model_predicts_nan_for_a_missing_value_and_refuses_a_missing_feature():
    labels, features = _clinical_data(2, n=100)
    model = clinical.fit_combined(labels, features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        probability = model.predict_proba(
            {"image": [0.0, np.nan, 1e4, -1e4], "length": [30.0, 30.0, 30.0, 30.0]}
        )
    assert math.isnan(probability[1]) and not np.isnan(probability[[0, 2, 3]]).any()
    assert probability[2] == 1.0 and 0.0 <= probability[3] < 1e-300
    with pytest.raises(ValueError, match=r"needs the features.*missing \['length'\]"):
        model.predict_proba({"image": [0.0]})
    with pytest.raises(ValueError, match="one value per row"):
        model.predict_proba({"image": [0.0], "length": [1.0, 2.0]})


def test_combined_model_saves_and_loads_with_identical_probabilities(tmp_path):
    labels, features = _clinical_data(3, n=100)
    model = clinical.fit_combined(labels, features)
    path = tmp_path / "combined.json"
    assert clinical.load_combined(path) is None
    clinical.save_combined(path, model)
    loaded = clinical.load_combined(path)
    assert loaded == model
    np.testing.assert_array_equal(loaded.predict_proba(features), model.predict_proba(features))
    assert [p.name for p in tmp_path.iterdir()] == ["combined.json"]  # no temporary left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Expecting"),
        ("[1, 2]", "kind"),
        ('{"kind": "logistic", "feature_names": ["a"]}', "missing fields"),
        ('{"kind": "logistic", "feature_names": ["a"], "means": [0], "scales": [0],'
         ' "coefficients": [1], "intercept": 0}', "scale of a"),
        ('{"kind": "logistic", "feature_names": ["a"], "means": [0, 1], "scales": [1],'
         ' "coefficients": [1], "intercept": 0}', "`means` must hold one"),
        ('{"kind": "logistic", "feature_names": ["a"], "means": [null], "scales": [1],'
         ' "coefficients": [1], "intercept": 0}', "float"),
    ],
)  # fmt: skip
def test_a_malformed_model_file_is_an_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "combined.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"combined\.json: not a combined model.*{message}"):
        clinical.load_combined(path)
