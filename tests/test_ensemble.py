"""Tests of cervixnet.ensemble with tiny deterministic fake models and hand-computed Dice."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from cervixnet.ensemble import (
    MemberPredictions,
    PostprocessingChoice,
    apply_postprocessing,
    check_fold_members,
    choose_postprocessing,
    largest_component,
    predict_members,
)


def _intensity_run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask = first channel (flip-equivariant); probability = mean of the left half."""
    width = images.shape[2]
    return images[..., :1].copy(), images[:, :, : width // 2, 0].mean(axis=(1, 2))


def _left_biased_run(images: np.ndarray) -> tuple[np.ndarray, None]:
    """Mask = first channel times a ramp falling from 1 (left) to 0 (right): not equivariant."""
    ramp = np.linspace(1.0, 0.0, images.shape[2], dtype=np.float32)
    return images[..., :1] * ramp[None, None, :, None], None


def _images(n: int = 3, height: int = 5, width: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, height, width, 1)).astype(np.float32)


def _square(size: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A bool mask with the given (row, column, height, width) boxes set."""
    mask = np.zeros(size, dtype=bool)
    for row, column, height, width in boxes:
        mask[row : row + height, column : column + width] = True
    return mask


# predict_members


def test_flipped_member_is_the_prediction_on_the_flipped_image_flipped_back() -> None:
    images = _images()
    members = predict_members([_left_biased_run], images)
    assert members.masks.shape == (2, 3, 5, 6)
    assert members.probabilities is None
    by_hand, _ = _left_biased_run(images[:, :, ::-1])
    np.testing.assert_array_equal(members.masks[1], by_hand[:, :, ::-1, 0])
    np.testing.assert_array_equal(members.masks[0], _left_biased_run(images)[0][..., 0])
    # The same, through the API: the plain member for the flipped images, flipped back.
    on_flipped = predict_members([_left_biased_run], images[:, :, ::-1], horizontal_flip=False)
    np.testing.assert_array_equal(members.masks[1], on_flipped.masks[0][:, :, ::-1])
    assert not np.allclose(members.masks[1], members.masks[0])  # the run is not equivariant


def test_flip_of_an_equivariant_run_equals_the_plain_prediction() -> None:
    images = _images()
    members = predict_members([_intensity_run], images)
    np.testing.assert_array_equal(members.masks[0], images[..., 0])
    np.testing.assert_array_equal(members.masks[1], images[..., 0])
    # Label probabilities of the flipped pass are kept: the left half of the flipped image is
    # the right half of the image.
    np.testing.assert_allclose(members.probabilities[0], images[:, :, :3, 0].mean(axis=(1, 2)))
    np.testing.assert_allclose(members.probabilities[1], images[:, :, 3:, 0].mean(axis=(1, 2)))


def test_members_are_ordered_run_by_run_and_batched() -> None:
    calls: list[int] = []

    def recording_run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(images))
        assert images.dtype == np.float32
        return _intensity_run(images)

    def half_run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask, probability = _intensity_run(images)
        return mask / 2, probability / 2

    images = _images(n=7)
    members = predict_members([recording_run, half_run], images, batch_size=3)
    assert calls == [3, 3, 1, 3, 3, 1]  # plain pass, then flipped pass, of the first run
    assert members.masks.shape == (4, 7, 5, 6)
    np.testing.assert_allclose(members.masks[2:], members.masks[:2] / 2)
    np.testing.assert_allclose(members.probabilities[2:], members.probabilities[:2] / 2)
    unbatched = predict_members([recording_run, half_run], images, batch_size=8)
    np.testing.assert_array_equal(unbatched.masks, members.masks)
    plain = predict_members([recording_run, half_run], images, horizontal_flip=False)
    np.testing.assert_array_equal(plain.masks, members.masks[[0, 2]])


@pytest.mark.parametrize(
    ("runs", "images", "batch_size", "message"),
    [
        ([], _images(), 8, "0 runs"),
        ([_intensity_run], _images()[..., 0], 8, r"images\.shape=\(3, 5, 6\)"),
        ([_intensity_run], _images()[:0], 8, r"images\.shape=\(0, 5, 6, 1\)"),
        ([_intensity_run], _images(), 0, "batch_size=0"),
        ([_intensity_run], _images(), 2.0, "batch_size=2.0"),
        ([lambda x: (x[..., 0], None)], _images(), 8, r"mask\.shape=\(3, 5, 6\)"),
        ([lambda x: (x, np.zeros(2))], _images(), 8, "Received: 2$"),
        ([_intensity_run, _left_biased_run], _images(), 8, "2 of 4 members without"),
        (
            [lambda x: (x, np.zeros(len(x)) if len(x) == 2 else None)],
            _images(),
            2,
            "1 of 2 batches without",
        ),
    ],
)
def test_predict_members_rejects_bad_input(runs, images, batch_size, message) -> None:
    with pytest.raises(ValueError, match=message):
        predict_members(runs, images, batch_size=batch_size)


# MemberPredictions


def test_an_ensemble_of_identical_members_equals_one_member() -> None:
    images = _images()
    single = predict_members([_intensity_run], images, horizontal_flip=False)
    assert (single.std_mask() == 0).all()
    for horizontal_flip in (False, True):  # flipping an equivariant run adds identical masks
        ensemble = predict_members([_intensity_run] * 3, images, horizontal_flip=horizontal_flip)
        assert ensemble.masks.shape[0] == (6 if horizontal_flip else 3)
        np.testing.assert_array_equal(ensemble.mean_mask(), single.masks[0])
        assert ensemble.mean_mask().dtype == np.float32
        assert (ensemble.std_mask() == 0).all()
        assert (ensemble.uncertainty_scores(threshold=0.1) == 0).all()
    ensemble = predict_members([_intensity_run] * 3, images, horizontal_flip=False)
    np.testing.assert_array_equal(ensemble.mean_probability(), single.probabilities[0])


def test_two_members_have_std_half_their_difference() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 4, 7, 9)).astype(np.float32)
    members = MemberPredictions(np.stack([a, b]), np.array([[0.2, 0.4, 0.6, 0.8], [0.4] * 4]))
    np.testing.assert_allclose(members.std_mask(), np.abs(a - b) / 2, rtol=1e-5)
    np.testing.assert_allclose(members.mean_mask(), (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(members.mean_probability(), [0.3, 0.4, 0.5, 0.6])


def test_uncertainty_averages_the_std_over_any_member_foreground() -> None:
    a = np.array([[[0.9, 0.1], [0.2, 0.0]], [[0.4, 0.3], [0.1, 0.0]]])
    b = np.array([[[0.7, 0.6], [0.2, 0.0]], [[0.0, 0.5], [0.1, 0.0]]])
    members = MemberPredictions(np.stack([a, b]).astype(np.float32))
    # Image 0: foreground where either > 0.5: (0, 0) std 0.1 and (0, 1) std 0.25 -> 0.175.
    # Image 1: nothing > 0.5 (0.5 itself is not), so 0.0 although the members disagree.
    np.testing.assert_allclose(members.uncertainty_scores(), [0.175, 0.0], rtol=1e-6)
    # At 0.35 image 1's (0, 0) (std 0.2) and (0, 1) (std 0.1) join -> 0.15; image 0 is as before.
    np.testing.assert_allclose(members.uncertainty_scores(0.35), [0.175, 0.15], rtol=1e-6)
    assert members.mean_probability() is None


@pytest.mark.parametrize(
    ("masks", "probabilities", "message"),
    [
        (np.zeros((2, 3, 4)), None, r"masks\.shape=\(2, 3, 4\)"),
        (np.zeros((0, 3, 4, 4)), None, r"masks\.shape=\(0, 3, 4, 4\)"),
        (np.zeros((2, 3, 4, 4)), np.zeros((3, 2)), r"probabilities\.shape=\(3, 2\)"),
    ],
)
def test_member_predictions_reject_bad_shapes(masks, probabilities, message) -> None:
    with pytest.raises(ValueError, match=message):
        MemberPredictions(masks, probabilities)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan, "0.5", True])
def test_uncertainty_rejects_a_bad_threshold(threshold) -> None:
    with pytest.raises(ValueError, match="Received: threshold="):
        MemberPredictions(np.zeros((1, 1, 2, 2))).uncertainty_scores(threshold)


# largest_component


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (_square((6, 6)), _square((6, 6))),  # empty stays empty
        (_square((6, 6), (1, 1, 3, 2)), _square((6, 6), (1, 1, 3, 2))),  # one blob stays
        (_square((8, 8), (0, 0, 2, 2), (4, 4, 3, 3)), _square((8, 8), (4, 4, 3, 3))),
        # A diagonal chain of 3 is one 8-connected component and beats a block of 2.
        (
            _square((6, 6), (0, 0, 1, 1), (1, 1, 1, 1), (2, 2, 1, 1), (5, 0, 1, 2)),
            _square((6, 6), (0, 0, 1, 1), (1, 1, 1, 1), (2, 2, 1, 1)),
        ),
        # Equal sizes: the component met first in row-major order.
        (_square((5, 5), (3, 0, 1, 2), (0, 3, 1, 2)), _square((5, 5), (0, 3, 1, 2))),
        (np.full((3, 4), True), np.full((3, 4), True)),
    ],
)
def test_largest_component(mask: np.ndarray, expected: np.ndarray) -> None:
    kept = largest_component(mask)
    assert kept.dtype == bool
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(largest_component(mask.astype(np.uint8) * 255), expected)


@pytest.mark.parametrize("shape", [(4,), (1, 4, 4), (4, 4, 1)])
def test_largest_component_rejects_a_mask_that_is_not_2d(shape) -> None:
    with pytest.raises(ValueError, match=re.escape(f"mask.shape={shape}") + "$"):
        largest_component(np.zeros(shape))


# choose_postprocessing and apply_postprocessing


def test_largest_component_is_kept_when_it_removes_a_spurious_speck() -> None:
    truth = _square((10, 10), (2, 2, 4, 4))  # 16 pixels
    probability = np.where(_square((10, 10), (2, 2, 4, 4), (8, 8, 1, 1)), 0.9, 0.1)
    # A second image of another size, empty in truth and prediction: Dice 1.0 either way.
    choice = choose_postprocessing([truth, np.zeros((7, 13))], [probability, np.zeros((7, 13))])
    # Without: 2 * 16 / (16 + 17) = 32 / 33; with: 1.0. Means over the two images.
    assert choice == PostprocessingChoice(
        True, pytest.approx((32 / 33 + 1) / 2), pytest.approx(1.0), 2
    )


def test_largest_component_is_not_kept_when_the_truth_has_two_blobs() -> None:
    truth = _square((12, 12), (0, 0, 4, 4), (8, 8, 2, 2))  # 16 + 4 pixels
    probability = truth.astype(np.float32)
    choice = choose_postprocessing([truth], [probability])
    # Without: 1.0; with: the 4-pixel blob lost, 2 * 16 / (20 + 16) = 8 / 9.
    assert choice == PostprocessingChoice(False, 1.0, pytest.approx(8 / 9), 1)


def test_largest_component_is_not_kept_when_it_changes_nothing() -> None:
    truth = _square((10, 10), (2, 2, 4, 4))
    probability = np.where(_square((10, 10), (2, 2, 4, 5)), 0.8, 0.0)
    choice = choose_postprocessing([truth], [probability])
    assert choice == PostprocessingChoice(False, pytest.approx(32 / 36), pytest.approx(32 / 36), 1)


def test_choose_postprocessing_thresholds_the_probabilities() -> None:
    truth = _square((10, 10), (2, 2, 4, 4))
    probability = np.where(truth, 0.9, 0.0)
    probability[8, 8] = 0.55  # a speck above 0.5, below 0.6
    assert choose_postprocessing([truth], [probability]).largest_component
    assert not choose_postprocessing([truth], [probability], threshold=0.6).largest_component


def test_choose_postprocessing_on_no_image() -> None:
    choice = choose_postprocessing([], [])
    assert (choice.largest_component, choice.images) == (False, 0)
    assert math.isnan(choice.dice_without) and math.isnan(choice.dice_with)


@pytest.mark.parametrize(
    "choice",
    [PostprocessingChoice(True, 0.8, 0.85, 12), PostprocessingChoice(False, math.nan, math.nan, 0)],
)
def test_postprocessing_choice_round_trips_through_strict_json(choice) -> None:
    text = json.dumps(choice.to_dict(), allow_nan=False)
    restored = PostprocessingChoice.from_dict(json.loads(text))
    assert restored.to_dict() == choice.to_dict()
    assert restored.largest_component is choice.largest_component


@pytest.mark.parametrize(
    ("masks_true", "masks_prob", "threshold", "message"),
    [
        ([np.zeros((4, 4))], [], 0.5, "Received: 1 and 0 masks"),
        ([np.zeros((4, 4))], [np.zeros((4, 5))], 0.5, r"image 0 with shapes \(4, 4\) and \(4, 5\)"),
        ([np.zeros((4, 4, 1))], [np.zeros((4, 4, 1))], 0.5, r"image 0 with shapes \(4, 4, 1\)"),
        ([np.zeros((4, 4))], [np.zeros((4, 4))], 1.5, "threshold=1.5"),
    ],
)
def test_choose_postprocessing_rejects_bad_input(masks_true, masks_prob, threshold, message):
    with pytest.raises(ValueError, match=message):
        choose_postprocessing(masks_true, masks_prob, threshold)


def test_apply_postprocessing_follows_the_choice() -> None:
    mask = _square((10, 10), (2, 2, 4, 4), (8, 8, 1, 1))
    kept = _square((10, 10), (2, 2, 4, 4))
    for choice, expected in [
        (None, mask),
        (PostprocessingChoice(False, 1.0, 0.9, 3), mask),
        (PostprocessingChoice(True, 0.9, 1.0, 3), kept),
    ]:
        result = apply_postprocessing(mask.astype(np.uint8), choice)
        assert result.dtype == bool
        np.testing.assert_array_equal(result, expected)
    with pytest.raises(ValueError, match=r"mask\.shape=\(1, 10, 10\)"):
        apply_postprocessing(mask[None], None)


def test_folds_that_differ_cannot_be_averaged():
    from pathlib import Path

    from cervixnet.errors import ConfigError

    folders = [Path("cv/fold-1"), Path("cv/fold-2"), Path("cv/fold-3")]
    same = [((96, 128), 1)] * 3
    joint = [["label", "mask"], ["mask", "label"], ["label", "mask"]]  # list or dict outputs
    check_fold_members(folders, same, joint)
    with pytest.raises(ConfigError, match=r"fold-3: input \[96, 96\] x 1 .* fold-1's \[96, 128\]"):
        check_fold_members(folders, [*same[:2], ((96, 96), 1)], joint)
    with pytest.raises(ConfigError, match=r"fold-2: .* outputs \['mask'\] differ"):
        check_fold_members(folders, same, [["label", "mask"], ["mask"], ["label", "mask"]])
