"""A synthetic stand-in for the private clinical data: ultrasound-like images, masks, labels.

:func:`generate` writes a data folder in the documented manifest format (``manifest.csv``,
``images/``, ``masks/``) plus ``generator.json``, which records the generative model and the
best AUC any predictor can reach on the labels. Every command of cervixnet works on it out of
the box. See ``docs/synthetic-data.md`` for pictures and the full description.

What is drawn, per image: a sector-shaped field of view (apex at the top centre, black
outside) with multiplicative speckle, depth-dependent attenuation, layered tissue with bright
and dark blobs, fluid-filled regions (a bladder, amniotic fluid beyond the internal os), and
the cervix as transvaginal scans show it: a thick body just below the probe, longer than wide
and filling a large part of the sector, whose outline is exactly the smooth Bézier outline
(:func:`cervixnet.data.bezier.rasterize`) of the four control points written to the manifest
(external os, one side, internal os, other side). The endocervical canal runs along its long
axis from the external os (the end nearer the probe) to the internal os; the two lips either
side of it (written as class ids in ``lips/``) differ slightly in echogenicity and grain. An
optional funnel (a dark V) opens at the internal os, and a mottled texture has the strength of
the heterogeneity. Most images carry burnt-in yellow and green caliper crosses, as clinicians
leave them.

The generative model of the label (per patient; every image of a patient shares its label
and risk, the image features vary slightly around the patient's)::

    L ~ Normal(length_mean_mm, length_sd_mm), clipped to [length_min_mm, length_max_mm]
    z = (length_mean_mm - L) / length_sd_mm                      # > 0: shorter than usual
    funnel present ~ Bernoulli(sigmoid(funnel_logit_intercept + funnel_logit_slope * z))
    F = Uniform(funnel_min, funnel_max) if present else 0        # funnel depth / length
    H ~ Beta(*heterogeneity_beta)                                # texture heterogeneity
    logit = b0 + coef_length * z + coef_funnel * F + coef_heterogeneity * H
    risk = sigmoid(logit)
    label ~ Bernoulli(risk), redrawn until exactly n_preterm images have label 1

``b0`` is calibrated (bisection) so that the expected number of label-1 images equals
``n_preterm``; labels are then drawn patient by patient from a dedicated random stream and the
whole draw is repeated until the count is exact (rejection sampling), so the labels stay an
honest Bernoulli draw given the risks. ``best_auc`` in ``generator.json`` is the ROC AUC of the
risk against the labels over all images: no model that sees only the images can expect to beat
it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cervixnet.data.bezier import format_points, outline, parse_points, rasterize
from cervixnet.errors import ConfigError, DataError

__all__ = [
    "GENERATOR_INFO_NAME",
    "GENERATOR_VERSION",
    "SyntheticSpec",
    "generate",
    "load_generator_info",
]

GENERATOR_INFO_NAME = "generator.json"
_GENERATOR_ID = "cervixnet.data.synthetic"
# Bumped whenever the generator draws different images for the same spec, so that the
# cache of the built-in data set (cervixnet.data.sources) is regenerated.
GENERATOR_VERSION = 4
# The longest cervix that still fits the sector, laid level, per mm of imaging depth.
_LONGEST_PER_DEPTH = 1.15
_MANIFEST_COLUMNS = (
    "image",
    "patient_id",
    "label",
    "mask",
    "lips_mask",
    "bezier",
    "site",
    "risk",
    "cervical_length_mm",
    "canal_length_mm",
    "funnelling",
    "heterogeneity",
    "pixel_spacing_mm",
)
_YELLOW = (0, 255, 255)  # BGR
_GREEN = (0, 255, 0)  # BGR


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`generate` draws. The defaults mimic the paper's data set.

    Attributes:
        n_images: number of images (the paper: 354).
        n_preterm: exactly this many images get label 1 (the paper: 35, about 10 %).
        images_per_patient: inclusive range ``(low, high)`` of images per patient, drawn
            uniformly; the last patient gets what is left. Default ``(1, 3)``: ~175 patients.
        seed: seeds everything; the output is byte-identical for a given spec.
        image_heights: export heights in pixels, drawn per image; the width is
            ``round(height * 4 / 3)`` (4:3 exports such as 640 x 480).
        caliper_probability: probability that an image carries burnt-in calipers.
        n_sites: number of clinics; each patient belongs to one (``site`` column
            ``clinic1``, ``clinic2``, ...). Sites differ in gain and sector width.
        site_gain_spread: the sites' overall gains are spread evenly over
            ``1 +- site_gain_spread / 2``.
        fov_depth_mm: imaging depth covered by the sector's radius; the pixel spacing is this
            depth divided by the radius in pixels, so a cervix of given length in mm spans the
            same fraction of every image, whatever its size. Default 45 mm: the view zoomed
            onto the cervix, as cervical-length guidelines ask, so that it fills a large part
            of the sector; ``length_max_mm`` may be at most 1.15 times it.
        fov_depth_jitter_mm: per-image standard deviation of the imaging depth.
        length_mean_mm: mean cervical length of the population (``mean_L``).
        length_sd_mm: its standard deviation (``sd_L``).
        length_min_mm: lower clip of the cervical length.
        length_max_mm: upper clip of the cervical length.
        funnel_logit_intercept: logit of having a funnel at average length.
        funnel_logit_slope: increase of that logit per ``sd_L`` of shortening.
        funnel_min: smallest funnel depth, as a fraction of the cervical length.
        funnel_max: largest funnel depth, as a fraction of the cervical length.
        heterogeneity_beta: ``(a, b)`` of the Beta distribution of the heterogeneity.
        coef_length: ``b_L``, log-odds per ``sd_L`` of shortening (the strongest cue).
        coef_funnel: ``b_F``, log-odds per unit of funnelling fraction.
        coef_heterogeneity: ``b_H``, log-odds per unit of heterogeneity.
        length_jitter: per-image relative standard deviation of the visible length.
        typical_angle_deg: typical tilt of the canal from the horizontal (external os up and
            to the right of the internal os).
        angle_range_deg: patients' tilts are uniform in ``typical +- angle_range_deg``.
        write_clean: also write each image before its calipers were burnt in, as grayscale
            ``clean/<name>.png``, listed in a ``clean_image`` column (for testing caliper
            removal against the truth). Off by default; the other files are the same either way.
    """

    n_images: int = 354
    n_preterm: int = 35
    images_per_patient: tuple[int, int] = (1, 3)
    seed: int = 0
    image_heights: tuple[int, ...] = (300, 360, 384, 420, 450, 480)
    caliper_probability: float = 0.85
    n_sites: int = 2
    site_gain_spread: float = 0.2
    fov_depth_mm: float = 45.0
    fov_depth_jitter_mm: float = 1.0
    length_mean_mm: float = 35.0
    length_sd_mm: float = 8.0
    length_min_mm: float = 10.0
    length_max_mm: float = 50.0
    funnel_logit_intercept: float = -1.8
    funnel_logit_slope: float = 1.5
    funnel_min: float = 0.15
    funnel_max: float = 0.6
    heterogeneity_beta: tuple[float, float] = (2.0, 2.0)
    coef_length: float = 1.4
    coef_funnel: float = 2.0
    coef_heterogeneity: float = 1.0
    length_jitter: float = 0.04
    typical_angle_deg: float = 15.0
    angle_range_deg: float = 15.0
    write_clean: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ConfigError(
                f"SyntheticSpec: `{name}` must be {expected}. "
                f"Received: {name}={getattr(self, name)!r}"
            )

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        if not is_int(self.n_images) or self.n_images < 1:
            fail("n_images", "a positive integer")
        if not is_int(self.n_preterm) or not 0 <= self.n_preterm <= self.n_images:
            fail("n_preterm", f"an integer in [0, n_images={self.n_images}]")
        low_high = tuple(self.images_per_patient)
        if len(low_high) != 2 or not all(is_int(v) for v in low_high):
            fail("images_per_patient", "a pair of integers (low, high)")
        if not 1 <= low_high[0] <= low_high[1]:
            fail("images_per_patient", "(low, high) with 1 <= low <= high")
        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "a non-negative integer")
        heights = tuple(self.image_heights)
        if not heights or not all(is_int(h) and h >= 96 for h in heights):
            fail("image_heights", "a non-empty sequence of integers >= 96")
        if not 0.0 <= self.caliper_probability <= 1.0:
            fail("caliper_probability", "in [0, 1]")
        if not isinstance(self.write_clean, bool):
            fail("write_clean", "True or False")
        if not is_int(self.n_sites) or self.n_sites < 1:
            fail("n_sites", "a positive integer")
        if not 0.0 <= self.site_gain_spread < 1.0:
            fail("site_gain_spread", "in [0, 1)")
        if not self.fov_depth_mm > 0:
            fail("fov_depth_mm", "positive")
        if not 0.0 <= self.fov_depth_jitter_mm < self.fov_depth_mm / 4:
            fail("fov_depth_jitter_mm", "in [0, fov_depth_mm / 4)")
        if not self.length_sd_mm > 0:
            fail("length_sd_mm", "positive")
        if not 0 < self.length_min_mm <= self.length_mean_mm <= self.length_max_mm:
            fail("length_mean_mm", "between length_min_mm > 0 and length_max_mm")
        longest = _LONGEST_PER_DEPTH * self.fov_depth_mm
        if self.length_max_mm > longest:
            fail("length_max_mm", f"at most {_LONGEST_PER_DEPTH} * fov_depth_mm = {longest:g}")
        if not 0.0 <= self.funnel_min <= self.funnel_max <= 0.8:
            fail("funnel_max", "with 0 <= funnel_min <= funnel_max <= 0.8")
        beta = tuple(self.heterogeneity_beta)
        if len(beta) != 2 or not all(b > 0 for b in beta):
            fail("heterogeneity_beta", "a pair of positive numbers (a, b)")
        if not 0.0 <= self.length_jitter <= 0.2:
            fail("length_jitter", "in [0, 0.2]")
        if not 0.0 <= self.angle_range_deg <= 60.0:
            fail("angle_range_deg", "in [0, 60]")
        if not -45.0 <= self.typical_angle_deg <= 45.0:
            fail("typical_angle_deg", "in [-45, 45]")


# ----------------------------------------------------------------------------------------
# The generative model: patients, latent features, risks and labels.


@dataclasses.dataclass(frozen=True)
class _Patient:
    patient_id: str
    n_images: int
    site: int
    length_mm: float
    funnel: float
    heterogeneity: float
    risk: float
    label: int
    angle_deg: float
    # The cervix' centre's lateral offset and its nearest point's gap below the probe's arc,
    # fractions of the sector's radius.
    offset: tuple[float, float]


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _calibrate_intercept(scores: np.ndarray, counts: np.ndarray, target: float) -> float:
    """Bisection for b0 with sum(counts * sigmoid(b0 + scores)) == target."""
    low, high = -40.0, 40.0
    for _ in range(100):
        middle = (low + high) / 2
        if float(np.sum(counts * _sigmoid(middle + scores))) > target:
            high = middle
        else:
            low = middle
    return round((low + high) / 2, 6)


def _draw_labels(
    rng: np.random.Generator, risks: np.ndarray, counts: np.ndarray, n_preterm: int
) -> tuple[np.ndarray, int]:
    """Bernoulli(risk) per patient, redrawn until exactly ``n_preterm`` images are label 1.

    Returns the labels and the 1-based number of the accepted draw.
    """
    batch, max_batches = 1000, 500
    for b in range(max_batches):
        draws = rng.random((batch, risks.size)) < risks
        hits = np.flatnonzero(draws.astype(np.int64) @ counts == n_preterm)
        if hits.size:
            return draws[hits[0]].astype(np.int64), b * batch + int(hits[0]) + 1
    raise ConfigError(
        f"SyntheticSpec: no label draw in {batch * max_batches} gave exactly "
        f"n_preterm={n_preterm} preterm images with these patients; change `seed`, "
        f"`n_preterm` or `images_per_patient`. Received: n_preterm={n_preterm}"
    )


def _reachable(counts: list[int], total: int) -> bool:
    """Whether some patients' image counts add up to exactly ``total`` (subset sum)."""
    sums = 1  # bit k set: k images reachable
    for count in counts:
        sums |= sums << count
    return bool(sums >> total & 1)


def _draw_image_counts(rng: np.random.Generator, spec: SyntheticSpec) -> list[int]:
    """Images per patient, uniform in ``images_per_patient``, the last patient takes the rest.

    Redrawn (up to 100 times) until ``n_preterm`` images can be split off exactly by whole
    patients, so that the label draw can hit it.
    """
    low, high = spec.images_per_patient
    for _ in range(100):
        counts: list[int] = []
        while sum(counts) < spec.n_images:
            counts.append(int(min(rng.integers(low, high + 1), spec.n_images - sum(counts))))
        if _reachable(counts, spec.n_preterm):
            return counts
    raise ConfigError(
        f"SyntheticSpec: cannot make exactly n_preterm={spec.n_preterm} of the "
        f"n_images={spec.n_images} images preterm with whole patients of "
        f"images_per_patient={tuple(spec.images_per_patient)} images each; change one of them. "
        f"Received: n_preterm={spec.n_preterm}"
    )


def _draw_patients(spec: SyntheticSpec) -> tuple[list[_Patient], dict[str, Any]]:
    streams = np.random.SeedSequence([spec.seed, 0]).spawn(2)
    rng, label_rng = np.random.default_rng(streams[0]), np.random.default_rng(streams[1])

    counts = _draw_image_counts(rng, spec)
    n = len(counts)
    count_array = np.asarray(counts, dtype=np.int64)

    length = np.clip(
        rng.normal(spec.length_mean_mm, spec.length_sd_mm, n),
        spec.length_min_mm,
        spec.length_max_mm,
    )
    z = (spec.length_mean_mm - length) / spec.length_sd_mm
    funnel_p = _sigmoid(spec.funnel_logit_intercept + spec.funnel_logit_slope * z)
    has_funnel = rng.random(n) < funnel_p
    funnel = np.where(has_funnel, rng.uniform(spec.funnel_min, spec.funnel_max, n), 0.0)
    heterogeneity = rng.beta(*spec.heterogeneity_beta, n)
    site = rng.integers(0, spec.n_sites, n)
    angle = spec.typical_angle_deg + rng.uniform(-spec.angle_range_deg, spec.angle_range_deg, n)
    offset = np.stack([rng.uniform(-0.1, 0.1, n), rng.uniform(0.07, 0.16, n)], axis=1)

    scores = (
        spec.coef_length * z + spec.coef_funnel * funnel + spec.coef_heterogeneity * heterogeneity
    )
    target = min(max(spec.n_preterm, 0.5), spec.n_images - 0.5)
    b0 = _calibrate_intercept(scores, count_array, target)
    risk = np.round(_sigmoid(b0 + scores), 4)
    labels, draw = _draw_labels(label_rng, risk, count_array, spec.n_preterm)

    width = max(3, len(str(n)))
    patients = [
        _Patient(
            patient_id=f"p{i + 1:0{width}d}",
            n_images=counts[i],
            site=int(site[i]),
            length_mm=float(length[i]),
            funnel=float(funnel[i]),
            heterogeneity=float(heterogeneity[i]),
            risk=float(risk[i]),
            label=int(labels[i]),
            angle_deg=float(angle[i]),
            offset=(float(offset[i, 0]), float(offset[i, 1])),
        )
        for i in range(n)
    ]
    model = {
        "formula": (
            "z = (mean_L - L) / sd_L; logit = b0 + b_L * z + b_F * F + b_H * H; "
            "risk = sigmoid(logit); label ~ Bernoulli(risk)"
        ),
        "coefficients": {
            "b0": b0,
            "b_L": spec.coef_length,
            "b_F": spec.coef_funnel,
            "b_H": spec.coef_heterogeneity,
        },
        "mean_L": spec.length_mean_mm,
        "sd_L": spec.length_sd_mm,
        "L": (
            f"Normal({spec.length_mean_mm}, {spec.length_sd_mm}) clipped to "
            f"[{spec.length_min_mm}, {spec.length_max_mm}] mm, per patient"
        ),
        "F": (
            f"0, or Uniform({spec.funnel_min}, {spec.funnel_max}) (funnel depth / cervical "
            f"length) with probability sigmoid({spec.funnel_logit_intercept} + "
            f"{spec.funnel_logit_slope} * z), per patient"
        ),
        "H": f"Beta{tuple(spec.heterogeneity_beta)}, per patient",
        "b0_calibration": (
            "bisection: sum over patients of n_images * risk == n_preterm (the expected "
            "number of label-1 images)"
        ),
        "label_sampling": (
            "patient labels ~ Bernoulli(risk) from a dedicated random stream, the whole draw "
            "repeated until exactly n_preterm images have label 1 (rejection sampling)"
        ),
        "accepted_draw": draw,
        "per_image": (
            "every image has its patient's label and risk; the visible length varies by "
            f"a factor Normal(1, {spec.length_jitter}), the funnel by Normal(1, 0.1), the "
            "heterogeneity by Normal(0, 0.05), angle, position and gain slightly"
        ),
    }
    return patients, model


# ----------------------------------------------------------------------------------------
# Rendering one image.


def _smooth_field(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """A smooth random field with unit standard deviation and features ~``cell`` pixels."""
    coarse = rng.standard_normal(
        (max(2, round(height / cell) + 2), max(2, round(width / cell) + 2))
    ).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _fits(
    curve: np.ndarray,
    apex: tuple[float, float],
    r0: float,
    radius: float,
    half: float,
    height: int,
    width: int,
) -> bool:
    """Whether a cervix outline lies well inside the sector and the image."""
    dx, dy = curve[:, 0] - apex[0], curve[:, 1] - apex[1]
    r = np.hypot(dx, dy)
    phi = np.abs(np.arctan2(dx, dy))
    margin = 0.02 * radius
    return bool(
        np.all(r > r0 + 3 * margin)
        and np.all(r < radius - margin)
        and np.all(phi < half - 0.06)
        and np.all(curve[:, 0] > margin)
        and np.all(curve[:, 0] < width - 1 - margin)
        and np.all(curve[:, 1] < height - 1 - margin)
    )


def _draw_cross(
    image: np.ndarray, centre: np.ndarray, arm: int, thickness: int, color: tuple[int, int, int]
) -> None:
    x, y = round(float(centre[0])), round(float(centre[1]))
    cv2.line(image, (x - arm, y), (x + arm, y), color, thickness, cv2.LINE_8)
    cv2.line(image, (x, y - arm), (x, y + arm), color, thickness, cv2.LINE_8)


def _draw_dotted(
    image: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    step: float,
    size: int,
    color: tuple[int, int, int],
) -> None:
    n = int(float(np.hypot(*(end - start))) // step)
    for k in range(1, n):
        x, y = start + (end - start) * (k / n)
        x, y = round(float(x)), round(float(y))
        cv2.rectangle(image, (x, y), (x + size - 1, y + size - 1), color, -1, cv2.LINE_8)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Points as int32 with 4 fractional bits, for OpenCV drawing with ``shift=4``."""
    return np.round(np.asarray(points) * 16).astype(np.int32)


def _render(
    rng: np.random.Generator, spec: SyntheticSpec, patient: _Patient, height: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray, np.ndarray]:
    """Draws one image of ``patient``.

    Returns:
        ``(BGR image, 0/1 mask, manifest fields, grayscale image before the calipers, class-id
        mask of the two lips (``_lips``))``.

    The anatomy (echogenicity, in amplitude units) is drawn at half resolution and upsampled;
    the cervix mask, the speckle, the sector and the marks are drawn at full resolution.
    """
    width = round(height * 4 / 3)
    site_gain = 1.0
    if spec.n_sites > 1:
        site_gain = 1.0 + spec.site_gain_spread * (patient.site / (spec.n_sites - 1) - 0.5)

    # Field of view: an annular sector whose apex sits just above the top centre.
    apex = (width / 2 + rng.uniform(-0.01, 0.01) * width, -0.02 * height)
    r0 = 0.07 * height
    radius = 0.96 * height - apex[1] - rng.uniform(0.0, 0.03) * height
    half = math.radians(52.0 + 6.0 * (patient.site % 2) + rng.uniform(-2.0, 2.0))
    depth_mm = spec.fov_depth_mm + spec.fov_depth_jitter_mm * float(rng.standard_normal())
    spacing = depth_mm / (radius - r0)

    # Cervix geometry, jittered around the patient's.
    length_mm = patient.length_mm * (1.0 + spec.length_jitter * float(rng.standard_normal()))
    length_mm = float(np.clip(length_mm, 0.8 * spec.length_min_mm, spec.length_max_mm))
    funnel = 0.0
    if patient.funnel > 0:
        funnel = float(np.clip(patient.funnel * (1.0 + 0.1 * rng.standard_normal()), 0.05, 0.8))
    hetero = float(np.clip(patient.heterogeneity + 0.05 * rng.standard_normal(), 0.0, 1.0))
    # A thick body, 18 to 28 mm across its canal for nine in ten (thicker when longer), 0.45
    # to 0.9 x its length.
    width_mm = 12.0 + 0.3 * length_mm + rng.normal(0.0, 1.5)
    width_mm = float(np.clip(width_mm, 0.45 * length_mm, 0.9 * length_mm))
    length_px, width_px = length_mm / spacing, width_mm / spacing
    asym = rng.uniform(-0.15, 0.15)
    # The widest part lies at or a little towards the external os (the lips); the internal
    # os end stays blunt, as the cervix joins the lower uterine segment there.
    shifts = rng.uniform(0.0, 0.08, 2) * length_px
    gap = patient.offset[1] * radius  # from the probe's arc to the cervix' nearest point
    # Up to 30 jittered placements around the patient's, each less tilted and more central
    # than the one before; then level, centred, ever deeper.
    fallback_gaps = np.linspace(0.07, 0.47, 17)
    for attempt in range(30 + fallback_gaps.size):
        settle = max(0.0, 1.0 - attempt / 30)
        angle = math.radians((patient.angle_deg + rng.normal(0.0, 4.0)) * settle)
        lateral = (patient.offset[0] + rng.normal(0.0, 0.02)) * settle
        shift = gap + rng.normal(0.0, 0.01) * radius
        if attempt >= 30:
            shift = float(fallback_gaps[attempt - 30]) * radius
        u = np.array([math.cos(angle), -math.sin(angle)])  # internal os -> external os
        v = np.array([math.sin(angle), math.cos(angle)])
        shape = np.array(
            [
                u * length_px / 2,
                v * width_px / 2 * (1 + asym) + u * shifts[0],
                -u * length_px / 2,
                -v * width_px / 2 * (1 - asym) + u * shifts[1],
            ]
        )
        # The cervix' nearest point to the probe sits `shift` below the probe's arc.
        top = -float(outline(shape)[:, 1].min())
        centre = np.array([apex[0] + lateral * radius, apex[1] + r0 + max(shift, 0.0) + top])
        points = parse_points(format_points(centre + shape))  # exactly what the manifest holds
        if _fits(outline(points), apex, r0, radius, half, height, width):
            break
    mask = rasterize(points, height, width)
    external, internal = points[0], points[2]

    # Half-resolution canvas for the anatomy (coordinates scaled by `s`).
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    s = 0.5
    xs = np.arange(w2, dtype=np.float32) / s - np.float32(apex[0])
    ys = np.arange(h2, dtype=np.float32) / s - np.float32(apex[1])
    dx, dy = np.meshgrid(xs, ys)
    rn = np.sqrt(dx * dx + dy * dy) / np.float32(radius)

    # Surrounding tissue: layers, coarse variation, bright and dark blobs.
    base = rng.uniform(0.22, 0.3)
    layer_angle = angle + rng.normal(0.0, 0.3)
    across = dx * math.sin(layer_angle) + dy * math.cos(layer_angle)
    period = rng.uniform(0.05, 0.1) * height
    wobble = _smooth_field(rng, h2, w2, 0.1 * height)
    layers = np.sin((2 * np.pi / period) * across + 1.5 * wobble)
    coarse = _smooth_field(rng, h2, w2, 0.06 * height)
    tissue = np.exp(0.35 * coarse + 0.18 * layers)
    blobs = np.zeros((h2, w2), dtype=np.float32)
    for _ in range(int(rng.integers(8, 16))):
        c = (rng.uniform(0, width) * s, rng.uniform(0.1, 1.0) * height * s)
        axes = (rng.uniform(0.02, 0.09) * height * s, rng.uniform(0.01, 0.05) * height * s)
        value = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0))
        cv2.ellipse(blobs, (c, (2 * axes[0], 2 * axes[1]), float(rng.uniform(0, 180))), value, -1)
    tissue *= np.exp(0.7 * cv2.GaussianBlur(blobs, (0, 0), 0.006 * height))

    # Fluid: amniotic fluid beyond the internal os (at times with the fetal head), a bladder.
    fluid = np.zeros((h2, w2), dtype=np.float32)
    bright = np.zeros((h2, w2), dtype=np.float32)
    if rng.random() < 0.75:
        c = internal - u * rng.uniform(0.18, 0.28) * radius + v * rng.normal(0, 0.05) * radius
        axes = (rng.uniform(0.16, 0.26) * radius * s, rng.uniform(0.1, 0.18) * radius * s)
        tilt = math.degrees(math.atan2(v[1], v[0])) + rng.normal(0, 15)
        cv2.ellipse(fluid, (tuple(c * s), (2 * axes[0], 2 * axes[1]), tilt), 1.0, -1)
        if rng.random() < 0.5:
            head = c * s - u * axes[0]
            size = 0.35 * radius * s
            cv2.ellipse(
                bright, (tuple(head), (2 * size, 2 * size), 0.0), 1.0, max(1, height // 160)
            )
    if rng.random() < 0.5:
        c = (apex[0] * s - rng.uniform(0.25, 0.4) * radius * s, rng.uniform(0.18, 0.3) * radius * s)
        axes = (rng.uniform(0.24, 0.4) * radius * s, rng.uniform(0.12, 0.2) * radius * s)
        cv2.ellipse(fluid, (c, (2 * axes[0], 2 * axes[1]), rng.uniform(-20, 20)), 1.0, -1)
    fluid = cv2.GaussianBlur(fluid, (0, 0), 0.004 * height + 0.5)
    enhancement = np.roll(cv2.GaussianBlur(fluid, (0, 0), 0.015 * height), height // 40, axis=0)
    tissue = tissue * (1.0 - 0.95 * fluid) * (1.0 + 0.6 * enhancement) + 1.5 * bright
    tissue *= base

    # The cervix: higher echogenicity, mottled in proportion to its heterogeneity. Its two
    # lips, either side of the endocervical canal, differ slightly in echogenicity and grain.
    small = rasterize(points * s, h2, w2)
    small_mask = small.astype(np.float32)
    bow = rng.normal(0.0, 0.02) * length_px
    small_lips, _ = _lips(small, external * s, internal * s, v, bow * s, spacing / s)
    level = base * rng.uniform(1.9, 2.5)
    mottle = _smooth_field(rng, h2, w2, 0.018 * height)
    fine = np.where(
        small_lips == 1,
        _smooth_field(rng, h2, w2, 0.04 * height),
        _smooth_field(rng, h2, w2, 0.06 * height),
    )
    # One lip 1.4 to 4.3 dB brighter than the other.
    lip_contrast = rng.uniform(0.08, 0.25) * rng.choice([-1.0, 1.0])
    side = np.where(small_lips == 1, 1.0, -1.0).astype(np.float32)
    cervix = level * np.exp(0.6 * hetero * mottle + 0.1 * fine + lip_contrast * side)

    # Endocervical canal from the external to the internal os, slightly bowed: a line of
    # mucosa 0.8 mm across (echogenic or hypoechoic), whatever the export's pixel size, in the
    # glandular zone around it, mostly darker than the lips (hypoechoic) and never invisible.
    t = np.linspace(0.0, 1.0, 24)[:, None]
    canal = (external + (internal - external) * t + v * bow * 4 * t * (1 - t)) * s
    lips, canal_mm = _lips(mask, external, internal, v, bow, spacing)
    canal_layer = np.zeros((h2, w2), dtype=np.float32)
    glands = np.zeros((h2, w2), dtype=np.float32)
    mucosa_px = max(1, round(0.8 / spacing * s))
    cv2.polylines(canal_layer, [_fixed(canal)], False, 1.0, mucosa_px, cv2.LINE_AA, 4)
    cv2.polylines(
        glands, [_fixed(canal)], False, 1.0, max(2, round(0.25 * width_px * s)), cv2.LINE_AA, 4
    )
    glands = cv2.GaussianBlur(glands, (0, 0), 0.05 * width_px + 0.5)
    glandular = rng.uniform(0.12, 0.3) * (-1.0 if rng.random() < 0.7 else 1.0)
    echogenic = rng.random() < 0.6
    cervix *= np.exp(glandular * glands) * (1.0 + (1.4 if echogenic else -0.8) * canal_layer)

    # Funnelling: a dark V opening at the internal os, inside the mask.
    if funnel > 0:
        tip = internal + (external - internal) * funnel
        spread = (0.15 + 0.3 * funnel) * width_px
        wedge = np.array([tip, internal + v * spread - u * 8, internal - v * spread - u * 8])
        funnel_layer = np.zeros((h2, w2), dtype=np.float32)
        cv2.fillPoly(funnel_layer, [_fixed(wedge * s)], 1.0, cv2.LINE_AA, 4)
        funnel_layer = cv2.GaussianBlur(funnel_layer, (0, 0), 0.8) * small_mask
        cervix *= 1.0 - 0.93 * funnel_layer
    cervix = cervix * small_mask + tissue * (1.0 - small_mask)  # no halo when upsampled

    # Depth: attenuation with partial time-gain compensation, a bright near field.
    depth_gain = np.exp(-rng.uniform(0.6, 1.0) * rn) * (1.0 + 0.4 * rn)
    depth_gain *= 1.0 + 0.8 * np.exp(-(((rn - r0 / radius) / 0.05) ** 2))
    tissue *= depth_gain
    cervix *= depth_gain

    # Full resolution: the exact cervix outline, speckle, log compression, the sector.
    tissue = cv2.resize(tissue, (width, height), interpolation=cv2.INTER_LINEAR)
    cervix = cv2.resize(cervix, (width, height), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(mask * np.uint8(255), (0, 0), 0.8).astype(np.float32)
    echo = tissue + (soft * np.float32(1 / 255)) * (cervix - tissue)
    # Speckle: the envelope of a smoothed complex field (blurred uniform noise is close to
    # Gaussian), i.e. Rayleigh distributed, with grains elongated across the beam.
    noise = np.frombuffer(rng.bytes(2 * height * width), dtype=np.uint8)
    noise = noise.reshape(2, height, width).astype(np.float32)
    real = cv2.GaussianBlur(noise[0], (0, 0), 1.4, sigmaY=0.8) - np.float32(127.5)
    imag = cv2.GaussianBlur(noise[1], (0, 0), 1.4, sigmaY=0.8) - np.float32(127.5)
    speckle = cv2.magnitude(real, imag)
    gain = site_gain * rng.uniform(0.92, 1.08) / float(speckle.mean()) ** 0.8
    sector = np.zeros((height, width), dtype=np.float32)
    half_deg = math.degrees(half)
    centre_fixed = (round(apex[0] * 16), round(apex[1] * 16))
    axes_fixed = (round(radius * 16), round(radius * 16))
    start, end = 90.0 - half_deg, 90.0 + half_deg
    cv2.ellipse(sector, centre_fixed, axes_fixed, 0.0, start, end, 1.0, -1, cv2.LINE_AA, 4)
    cv2.circle(sector, centre_fixed, round(r0 * 16), 0.0, -1, cv2.LINE_AA, 4)
    # Log compression: 0 dB (white) at amplitude 2, black below -42 dB. The speckle's spread
    # in dB is scaled by 0.8 and the result slightly smoothed, as scanners' speckle reduction
    # does.
    dynamic_range_db = 42.0
    slope = 255.0 * 20.0 / (dynamic_range_db * math.log(10.0))
    offset = 255.0 * (1.0 - 20.0 * math.log10(2.0) / dynamic_range_db)
    echo *= sector
    echo *= np.float32(gain)
    log_echo = cv2.log(np.maximum(echo, np.float32(1e-4)))
    log_speckle = cv2.log(np.maximum(speckle, np.float32(1e-4)))
    gray = (log_echo + np.float32(0.8) * log_speckle) * np.float32(slope) + np.float32(offset)
    gray = cv2.GaussianBlur(np.clip(gray, 0.0, 255.0).astype(np.uint8), (0, 0), 0.6)

    # The scanner's grey annotations: a depth scale (a tick per cm) and a header.
    for mm in range(0, int(depth_mm) + 1, 10):
        y = round(apex[1] + r0 + mm / spacing)
        if 0 <= y < height:
            cv2.line(gray, (width - 10, y), (width - (3 if mm % 50 else 1), y), 170, 1)
    scale = height / 480
    header = ("TVS 7.5MHz", f"D {depth_mm / 10:.1f}cm G{round(50 * site_gain)}")
    for i, text in enumerate(header):
        cv2.putText(
            gray,
            text,
            (6, round((16 + 16 * i) * scale)),
            cv2.FONT_HERSHEY_PLAIN,
            0.9 * scale,
            200,
            1,
            cv2.LINE_AA,
        )
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    clean = gray  # the anatomy before any mark is burnt in

    # Burnt-in calipers: yellow at the os ends with a dotted line, green across the width.
    if rng.random() < spec.caliper_probability:
        arm = max(3, round(0.012 * height))
        thickness = 1 if rng.random() < 0.6 else 2
        step = max(4.0, 0.012 * height)
        _draw_dotted(image, external, internal, step, thickness, _YELLOW)
        _draw_cross(image, external, arm, thickness, _YELLOW)
        _draw_cross(image, internal, arm, thickness, _YELLOW)
        if rng.random() < 0.7:
            curve = outline(points)
            rel = curve - (external + internal) / 2
            along, side = np.abs(rel @ u), rel @ v
            upper = curve[np.argmin(np.where(side > 0, along, np.inf))]
            lower = curve[np.argmin(np.where(side < 0, along, np.inf))]
            _draw_dotted(image, upper, lower, step, thickness, _GREEN)
            _draw_cross(image, upper, arm, thickness, _GREEN)
            _draw_cross(image, lower, arm, thickness, _GREEN)
        if rng.random() < 0.5:  # a measurement number beside the first cross (no values)
            corner = (round(float(external[0])) + arm + 2, round(float(external[1])) - arm)
            glyph = np.zeros((height, width), dtype=np.uint8)
            cv2.putText(glyph, "1", corner, cv2.FONT_HERSHEY_PLAIN, 0.8 * scale, 255, 1)
            image[glyph >= 128] = _YELLOW  # thresholded: pure yellow, never blended

    fields = {
        "bezier": format_points(points),
        "cervical_length_mm": f"{length_mm:.1f}",
        "canal_length_mm": f"{canal_mm:.2f}",
        "funnelling": f"{funnel:.3f}",
        "heterogeneity": f"{hetero:.3f}",
        "pixel_spacing_mm": f"{spacing:.4f}",
    }
    return image, mask, fields, clean, lips


def _lips(
    mask: np.ndarray,
    external: np.ndarray,
    internal: np.ndarray,
    v: np.ndarray,
    bow: float,
    spacing: float,
) -> tuple[np.ndarray, float]:
    """The cervix ``mask`` split along its canal into two lips, and the canal's length in mm.

    The canal runs from the external os to the internal os (both on the outline), bowed by
    ``bow`` pixels along ``v``: ``c(t) = external + t (internal - external) + 4 t (1 - t) bow
    v``. A pixel of the mask belongs to lip 1 (the anterior lip) when it lies on the ``-v``
    side of the canal point at its own position along the axis (the probe's side), else to
    lip 2 (the posterior lip). Returns uint8 ids ``(H, W)`` (0, 1, 2) and the curve's length
    (fine polyline).
    """
    axis = internal - external
    rows, columns = np.nonzero(mask)
    points = np.stack([columns, rows], axis=1).astype(np.float64)
    t = np.clip((points - external) @ axis / float(axis @ axis), 0.0, 1.0)[:, None]
    centre = external + t * axis + 4.0 * t * (1.0 - t) * bow * v
    lips = np.zeros(mask.shape, np.uint8)
    lips[rows, columns] = np.where((points - centre) @ v < 0, 1, 2)
    fine = np.linspace(0.0, 1.0, 400)[:, None]
    curve = external + fine * axis + 4.0 * fine * (1.0 - fine) * bow * v
    return lips, float(np.hypot(*np.diff(curve, axis=0).T).sum() * spacing)


# ----------------------------------------------------------------------------------------
# Writing the data set.


def _roc_auc(labels: list[int], scores: list[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score  # scikit-learn is slow to import: on demand

    return round(float(roc_auc_score(labels, scores)), 6)


def _is_previous_output(folder: Path) -> bool:
    info = load_generator_info(folder)
    return info is not None and info.get("generator") == _GENERATOR_ID


def _previous_files(folder: Path) -> list[Path]:
    """The image and mask files a previous run listed in its manifest (ours to replace)."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return []
    files = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for column in ("image", "mask", "lips_mask", "clean_image"):
                name = row.get(column) or ""
                path = (folder / name).resolve()
                if path.parent in {
                    (folder / sub).resolve() for sub in ("images", "masks", "lips", "clean")
                }:
                    files.append(path)
    return files


def generate(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Writes a synthetic data set and returns the path of its ``manifest.csv``.

    Writes ``images/*.png`` (3-channel colour PNG), ``masks/*.png`` (uint8 0/255, the size of
    its image), ``lips/*.png`` (uint8 class ids: 0 outside, 1 the anterior lip, 2 the
    posterior lip), ``manifest.csv`` (columns ``image, patient_id, label, mask, lips_mask,
    bezier, site, risk, cervical_length_mm, canal_length_mm, funnelling, heterogeneity,
    pixel_spacing_mm``) and
    ``generator.json`` (the spec, the generative model and its coefficients, counts and
    ``best_auc``). The output is byte-identical for a given spec.

    Args:
        out_dir: a new or empty folder, or the folder of an earlier synthetic data set (its
            listed files are replaced; nothing else in it is touched).
        spec: what to draw.

    Raises:
        DataError: ``out_dir`` is a file, or a non-empty folder that does not hold an earlier
            synthetic data set.
        ConfigError: ``spec`` is invalid, or no label draw hits ``n_preterm`` exactly.
    """
    if not isinstance(spec, SyntheticSpec):
        raise ConfigError(
            f"`spec` must be a SyntheticSpec. Received: spec of type {type(spec).__name__}"
        )
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(
            f"Cannot write synthetic data to {str(folder)!r}: it is a file, not a folder."
        )
    if folder.is_dir() and any(folder.iterdir()) and not _is_previous_output(folder):
        raise DataError(
            f"Refusing to write synthetic data into {str(folder)!r}: the folder is not empty "
            f"and holds no {GENERATOR_INFO_NAME} from an earlier synthetic data set. "
            "Choose a new or empty folder; nothing was written."
        )

    patients, model = _draw_patients(spec)

    for stale in _previous_files(folder) if folder.is_dir() else []:
        stale.unlink(missing_ok=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    (folder / "lips").mkdir(parents=True, exist_ok=True)
    if spec.write_clean:
        (folder / "clean").mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, str]] = []
    index = 0
    for patient in patients:
        for k in range(patient.n_images):
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1, index]))
            height = int(rng.choice(spec.image_heights))
            image, mask, fields, clean, lips = _render(rng, spec, patient, height)
            name = f"{patient.patient_id}_{k + 1}.png"
            cv2.imwrite(str(folder / "images" / name), image)
            cv2.imwrite(str(folder / "masks" / name), mask * np.uint8(255))
            cv2.imwrite(str(folder / "lips" / name), lips)
            if spec.write_clean:
                cv2.imwrite(str(folder / "clean" / name), clean)
                fields = {**fields, "clean_image": f"clean/{name}"}
            rows.append(
                {
                    "image": f"images/{name}",
                    "patient_id": patient.patient_id,
                    "label": str(patient.label),
                    "mask": f"masks/{name}",
                    "lips_mask": f"lips/{name}",
                    "site": f"clinic{patient.site + 1}",
                    "risk": f"{patient.risk:.4f}",
                    **fields,
                }
            )
            index += 1

    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        columns = (*_MANIFEST_COLUMNS, "clean_image") if spec.write_clean else _MANIFEST_COLUMNS
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    labels = [int(row["label"]) for row in rows]
    sites: dict[str, int] = {}
    for row in rows:
        sites[row["site"]] = sites.get(row["site"], 0) + 1
    info = {
        "generator": _GENERATOR_ID,
        "generator_version": GENERATOR_VERSION,
        "spec": dataclasses.asdict(spec),
        "model": model,
        "counts": {
            "images": len(rows),
            "patients": len(patients),
            "preterm_images": sum(labels),
            "control_images": len(labels) - sum(labels),
            "preterm_patients": sum(p.label for p in patients),
            "control_patients": sum(1 - p.label for p in patients),
            "images_per_site": dict(sorted(sites.items())),
        },
        "best_auc": _roc_auc(labels, [float(row["risk"]) for row in rows]),
        "best_auc_definition": (
            "ROC AUC (scikit-learn) of the manifest's risk column against its label column, "
            "over all images"
        ),
    }
    (folder / GENERATOR_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return manifest


def load_generator_info(folder: str | Path) -> dict[str, Any] | None:
    """The parsed ``generator.json`` of a data folder (or of a manifest's folder), or None.

    Returns None when the folder has no ``generator.json`` (e.g. real clinical data) or it is
    not valid JSON.
    """
    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    info_path = path / GENERATOR_INFO_NAME
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None
