"""The benchmark scripts' case parsing and comparison (the timings themselves are not tested)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import anatomy, onednn_kernels, precision_accuracy, training_throughput


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("cervixnet-train", {"precision": None, "xla": None, "keras_bn": False}),
        ("cervixnet-train:float32:xla", {"precision": "float32", "xla": True}),
        ("cervixnet-train:noxla", {"precision": None, "xla": False}),
        ("keras:float32", {"precision": "float32", "xla": False}),
        ("cervixnet-train:mixed_bfloat16", {"precision": "mixed_bfloat16"}),
        ("cervixnet-train:float32:kerasbn", {"precision": "float32", "keras_bn": True}),
        ("cervixnet-train:noaug", {"precision": None, "no_augment": True, "xla": None}),
        ("cervixnet-train", {"no_augment": False}),
        ("cervixnet-train:intra=1:inter=2", {"intra_op_threads": 1, "inter_op_threads": 2}),
        ("keras:float32:amp:fpmath", {"precision": "float32", "onednn_amp": True, "fpmath": True}),
        ("keras:mixed_float16:xla", {"precision": "mixed_float16", "xla": True}),
        ("torch:bfloat16:cl", {"kind": "torch", "precision": "bfloat16", "channels_last": True}),
        ("torch:float32:cl:compile", {"kind": "torch", "channels_last": True, "compile": True}),
        ("torch:float32", {"kind": "torch", "channels_last": False, "compile": False}),
    ],
)
def test_case_names_give_their_settings(case: str, expected: dict) -> None:
    settings = training_throughput.parse_case(case)
    assert {key: settings.get(key) for key in expected} == expected


@pytest.mark.parametrize(
    "case",
    [
        "keras",
        "keras:float64",
        "keras:float32:fast",
        "keras:float32:noxla",
        "keras:float32:noaug",
        "cervixnet-train:intra=x",
        "jax:f32",
    ],
)
def test_unknown_case_names_are_refused(case: str) -> None:
    with pytest.raises(SystemExit, match="unknown case"):
        training_throughput.parse_case(case)


def _run(precision: str, seed: int, test_iou: float, val_iou_last: float, seconds: float):
    return {
        "precision": precision,
        "seed": seed,
        "test_iou": test_iou,
        "val_iou_last": val_iou_last,
        "test_auc": 0.7,
        "seconds": seconds,
    }


def test_precisions_are_compared_with_float32_seed_by_seed() -> None:
    runs = [
        _run("float32", 0, 0.88, 0.89, 100),
        _run("mixed_bfloat16", 0, 0.86, 0.90, 50),
        _run("float32", 1, 0.90, 0.88, 100),
        _run("mixed_bfloat16", 1, 0.91, 0.88, 50),
        _run("mixed_bfloat16", 2, 0.10, 0.10, 50),  # no float32 partner: left out
    ]
    (row,) = precision_accuracy.compare(runs, tolerance=0.01)
    assert row["precision"] == "mixed_bfloat16" and row["seeds"] == [0, 1]
    assert row["test_iou_differences"] == pytest.approx([-0.02, 0.01])
    assert row["test_iou_difference"] == pytest.approx(-0.005)
    assert row["val_iou_last_difference"] == pytest.approx(0.005)
    assert row["speed_ratio"] == pytest.approx(2.0)
    assert row["within_tolerance"] is True
    (strict,) = precision_accuracy.compare(runs, tolerance=0.004)
    assert strict["within_tolerance"] is False


def test_repeats_are_merged_into_their_median() -> None:
    rows = [
        {
            "case": "a",
            "batch": 4,
            "images_per_second": 1.0,
            "cpu_ms_per_image": 20.0,
            "warmup_seconds": 90.0,
        },
        {"case": "b", "batch": 4, "error": "timed out"},
        {
            "case": "a",
            "batch": 4,
            "images_per_second": 3.0,
            "cpu_ms_per_image": 10.0,
            "warmup_seconds": 8.0,
        },
        {"case": "b", "batch": 4, "images_per_second": 5.0},
        {
            "case": "a",
            "batch": 4,
            "images_per_second": 2.5,
            "cpu_ms_per_image": 12.0,
            "warmup_seconds": 9.0,
        },
    ]
    a, b = training_throughput.merge_repeats(rows)
    assert a["images_per_second"] == 2.5 and a["images_per_second_runs"] == [1.0, 3.0, 2.5]
    assert a["cpu_ms_per_image"] == 12.0 and a["cpu_ms_per_image_runs"] == [20.0, 10.0, 12.0]
    assert a["warmup_seconds"] == 9.0 and a["warmup_seconds_runs"] == [90.0, 8.0, 9.0]
    assert b["images_per_second"] == 5.0 and b["images_per_second_runs"] == [5.0]
    assert "cpu_ms_per_image" not in b
    table = training_throughput.format_table(
        [{**a, "gflops": 1.0, "ceiling_gflops": 2.0, "percent_of_ceiling": 50.0}]
    )
    assert "| a | 4 | 2.50 | 12.0 | 1 | 2 | 50 |" in table


_CONV = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,{impl},{prop},src:bf16::blocked:acdb::f0,,"
    "alg:convolution_direct,mb4_ic64oc64_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1,{ms}"
)


def test_onednn_verbose_lines_of_the_logged_step_are_summed_per_kernel() -> None:
    lines = [
        "onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
        _CONV.format(impl="brg_conv_fwd:avx512_core_bf16", prop="forward_training", ms=999.0),
        onednn_kernels.STEP_STARTS,
        _CONV.format(impl="brg_conv_fwd:avx512_core_bf16", prop="forward_training", ms=40.5),
        "some other output",
        _CONV.format(impl="jit_bf16:avx512_core_bf16", prop="backward_weights", ms=150.0),
        _CONV.format(impl="brg_conv_fwd:avx512_core_bf16", prop="forward_training", ms=4.5),
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,x,forward_training,,,,7.0",
        f"{onednn_kernels.STEP_ENDS} 0.3125",
        _CONV.format(impl="jit_bf16:avx512_core_bf16", prop="backward_weights", ms=999.0),
    ]
    result = onednn_kernels.parse_verbose(lines)
    assert result["version"] == "oneDNN v3.7.3" and result["step_seconds"] == 0.3125
    weights, forward = result["kernels"]  # longest first; warm-up and creation left out
    assert weights == {"kind": "convolution", "propagation": "backward_weights",
                       "implementation": "jit_bf16:avx512_core_bf16", "calls": 1,
                       "milliseconds": 150.0}  # fmt: skip
    assert forward["calls"] == 2 and forward["milliseconds"] == 45.0
    table = onednn_kernels.format_table({"keras:mixed_bfloat16": result, "torch:bfloat16": {}})
    assert "| convolution | backward_weights | 150 | 0 |" in table
    assert "| whole step (wall) | | 312 | 0 |" in table


def test_step_clock_notes_every_step_of_a_fit() -> None:
    import keras
    import numpy as np

    from benchmarks import timing

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    clock = timing.step_clock()
    model.fit(np.ones((12, 3)), np.ones((12, 1)), batch_size=4, epochs=2, verbose=0,
              callbacks=[clock])  # fmt: skip
    assert len(clock.step_seconds) == 6 and min(clock.step_seconds) > 0
    assert clock.seconds >= sum(clock.step_seconds)
    assert clock.cpu_seconds > 0  # the process's CPU time over the same steps


def test_step_clock_leaves_out_the_step_begun_when_a_dataset_runs_out() -> None:
    # On a tf.data input of unknown length (as cervixnet's, made by flat_map) Keras begins
    # one more step per epoch, then finds no data.
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks import timing

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    dataset = tf.data.Dataset.from_tensor_slices((np.ones((12, 3)), np.ones((12, 1)))).batch(4)
    dataset = dataset.filter(lambda x, y: True)  # its length unknown
    clock = timing.step_clock()
    model.fit(dataset, epochs=2, verbose=0, callbacks=[clock])
    assert len(clock.step_seconds) == 6 and min(clock.step_seconds) > 0


def test_cases_of_different_networks_are_refused() -> None:
    same = [
        {"case": "keras:float32", "parameters": 495_178},
        {"case": "torch:float32", "parameters": 495_178},
        {"case": "torch:float32:cl", "error": "timed out"},
    ]
    assert training_throughput.parameter_mismatch(same) is None
    # The peer with the paper's label branch against the default model's: 8 % more.
    other = [*same, {"case": "torch:bfloat16", "parameters": 535_946}]
    message = training_throughput.parameter_mismatch(other)
    assert message is not None
    assert "torch:bfloat16 535,946" in message and "7.6 %" in message


def test_the_peer_has_the_label_branch_of_the_default_model() -> None:
    assert training_throughput.torch_head("default") == {
        "depth": 4,
        "units": [32],
        "dropout": 0.3,
        "features": ["bottleneck", "decoder1"],
        "pooling": "avgmax",
        "trains_encoder": False,
    }
    assert training_throughput.torch_head("paper")["features"] == ["bottleneck"]


@pytest.mark.parametrize("model_name", ["default", "paper"])
def test_the_pytorch_peer_has_the_keras_models_parameter_count(model_name: str) -> None:
    # The peer is timed against the Keras model: the same layers give the same count.
    torch_peer = pytest.importorskip("torch_peer", exc_type=ImportError)
    import torch

    size, base_filters = 32, 4
    spec = {"model": model_name, "size": size, "base_filters": base_filters}
    model = training_throughput._build_keras_model(spec)
    keras_count = training_throughput.trainable_parameters(model)
    head = training_throughput.torch_head(model_name)
    peer = torch_peer.JointUNet(base_filters=base_filters, **head)
    assert torch_peer.parameter_count(peer) == keras_count
    mask, label = peer(torch.rand(2, 1, size, size))
    assert tuple(mask.shape) == (2, 1, size, size) and tuple(label.shape) == (2, 1)
    if not head["trains_encoder"]:  # the label loss reaches the label branch only
        label.sum().backward()
        assert peer.encoders[0][0].weight.grad is None
        assert peer.label_head[0].weight.grad is not None


def test_the_recipe_benchmark_pairs_each_variant_with_the_default():
    from benchmarks.real_data_recipe import summarise

    def fold(k, iou):
        return {"fold": k, "iou": iou, "dice": iou + 0.02, "minutes": 1.0}

    results = {
        "default": [fold(1, 0.94), fold(2, 0.95)],
        "plain": [fold(1, 0.92), fold(2, 0.94)],
        "flip": [fold(1, 0.945), fold(2, 0.945)],
    }
    summary = summarise(results)
    assert summary["recipes"]["default"]["summary"]["iou"]["mean"] == pytest.approx(0.945)
    assert summary["difference_default_minus_plain"]["iou"]["per_fold"] == pytest.approx(
        [0.02, 0.01]
    )
    flip = summary["difference_flip_minus_default"]["iou"]
    assert flip["per_fold"] == pytest.approx([0.005, -0.005]) and flip["mean"] == pytest.approx(0)
    assert "difference_flip_minus_plain" not in summary


def _split(rng, n: int, shift: float) -> dict:
    import numpy as np

    labels = (np.arange(n) % 3 == 0).astype(float)
    reference = rng.normal(150.0, 20.0, n) - 40.0 * labels
    return {
        "label": labels,
        "patient": np.array([f"p{k // 2}" for k in range(n)]),
        "probability": np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, n), 0.01, 0.99),
        "dice": np.full(n, 0.95),
        "hd95_mm": np.full(n, 2.0),
        "assd_mm": np.full(n, 0.5),
        "measured": reference + shift + rng.normal(0, 2.0, n),
        "reference": reference,
    }


def test_the_millimetres_benchmark_fits_on_validation_and_scores_on_test():
    import numpy as np

    from benchmarks import millimetres
    from cervixnet import clinical

    rng = np.random.default_rng(0)
    val, test = _split(rng, 60, 0.0), _split(rng, 90, 1.5)
    figures, scores = millimetres.fold_figures(val, test)
    assert figures["agreement"]["bias"] == pytest.approx(1.5, abs=0.6)
    assert figures["marker_sign"] == -1  # a small measurement means label 1
    np.testing.assert_array_equal(scores["measurement"], -test["measured"])
    label = millimetres.label_figures(test["label"], scores, test["patient"], seed=0)
    assert list(label["predictors"]) == list(millimetres.PREDICTORS) and label["left_out"] == 0
    fitted = clinical.fit_combined(
        val["label"], {"measurement": val["measured"], "probability": val["probability"]}
    )  # the same fit, on validation only
    features = {"measurement": test["measured"], "probability": test["probability"]}
    np.testing.assert_allclose(scores["combined"], fitted.predict_proba(features))


def test_anatomy_errors_summary_leaves_out_what_was_not_measured() -> None:
    measured = np.array([10.0, 12.0, np.nan, 20.0])
    reference = np.array([11.0, 11.0, 15.0, 16.0])
    summary = anatomy.errors_summary(measured, reference)
    assert summary["images"] == 3 and summary["missing"] == 1
    assert summary["mae_mm"] == pytest.approx(2.0)  # |-1|, |1|, |4|
    assert summary["bias_mm"] == pytest.approx(4 / 3)
    assert summary["max_abs_mm"] == pytest.approx(4.0)


def test_the_semi_supervised_benchmark_nests_its_shares_and_blanks_only_the_others(tmp_path):
    import csv

    from benchmarks.semi_supervised import annotated_share, summarise, write_manifest
    from cervixnet.data.manifest import read_manifest
    from tests.conftest import write_tiny_dataset

    patients = tuple(f"p{k:02d}" for k in range(10))
    tenth, quarter = (annotated_share(patients, f, seed=3) for f in (0.1, 0.25))
    assert len(tenth) == 2 and len(quarter) == 2 and tenth <= quarter  # at least 2 patients
    half = annotated_share(patients, 0.5, seed=3)
    assert len(half) == 5 and quarter <= half
    assert annotated_share(patients, 1.0, seed=3) == set(patients)

    source = write_tiny_dataset(tmp_path / "data", n_patients=4)
    written = write_manifest(source, tmp_path / "blanked", keep={"p00", "p03"})
    manifest = read_manifest(written)
    for record in manifest.records:
        assert record.unannotated == (record.patient_id not in {"p00", "p03"})
        assert record.image.is_file()
    with source.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(manifest.records)

    def fold(k, dice):
        return {"fold": k, "dice": dice, "hd95_mm": 2.0, "hc_mae_mm": 3.0}

    summary = summarise(
        {
            "supervised 0.1": [fold(1, 0.90), fold(2, 0.92)],
            "semi-supervised 0.1": [fold(1, 0.93), fold(2, 0.92)],
            "supervised 1": [fold(1, 0.97), fold(2, 0.96)],
        }
    )
    assert summary["differences"]["0.1"]["dice"]["per_fold"] == pytest.approx([0.03, 0.0])
    assert set(summary["differences"]) == {"0.1"}
