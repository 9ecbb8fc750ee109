"""The ``cervixnet`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import datetime
import functools
import math
from pathlib import Path

import click

from cervixnet.cli.quiet import start_tensorflow
from cervixnet.config import ARCHITECTURES
from cervixnet.errors import CervixnetError


def _user_errors(command):
    """Turns cervixnet's user-facing errors into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CervixnetError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def _needs_tensorflow(command):
    """Loads TensorFlow before the command runs, without its start-up notices unless
    ``cervixnet --verbose`` (``cli/quiet.py``); ``--help`` never gets here."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        verbose = bool(click.get_current_context().find_root().params.get("verbose"))
        start_tensorflow(verbose)
        return command(*args, **kwargs)

    return wrapper


def _config_option(help_text: str):
    return click.option(
        "--config", "config_path", default=None, metavar="PATH|NAME", help=help_text
    )


def _cache_dir_option(what: str = "synthetic and prepared data are"):
    return click.option(
        "--cache-dir",
        type=click.Path(path_type=Path),
        default=None,
        help=f"Where the {what} cached [default: ~/.cache/cervixnet].",
    )


def _data_option(help_text: str = "Data folder with manifest.csv (or the manifest itself) "
                 "[default: built-in synthetic]."):  # fmt: skip
    return click.option(
        "--data", type=click.Path(exists=True, path_type=Path), default=None, help=help_text
    )


_unsafe_option = click.option(
    "--unsafe",
    is_flag=True,
    default=False,
    help="Load a .keras model even if it contains Python code (a Lambda layer). That code "
    "runs with your permissions as the model loads, so a hostile file can do anything you "
    "can; refused by default. Only for files you trust.",
)

_epochs_option = click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Passes over the training split (training.epochs); wins over --steps and the plan.",
)
_steps_option = click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Optimizer steps in all (training.steps), rounded up to whole passes "
    "[default: planned to fill the budget].",
)
_budget_option = click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Training time the plan fills with steps (training.budget_minutes) "
    "[default: 5 on a CPU, 30 on a GPU].",
)

_batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="The global batch (training.batch_size) [default: planned].",
)


def _training_overrides(epochs, steps, budget_minutes, batch_size) -> dict:
    return {
        "training.epochs": epochs,
        "training.steps": steps,
        "training.budget_minutes": budget_minutes,
        "training.batch_size": batch_size,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cervixnet")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    default=False,
    help="Show TensorFlow's own start-up and info log lines.",
)
def main(verbose: bool) -> None:
    """cervixnet: segment the cervix and predict preterm birth from transvaginal ultrasound.

    Start with `cervixnet train --arch unet-joint`: it generates the built-in synthetic
    data set, plans the run for this machine (`cervixnet plan` shows how), trains the joint
    U-Net on a patient-level 60/20/20 split and prints the figures of the paper's tables
    for each split. Then `cervixnet evaluate RUN_DIR` writes
    the report, and `cervixnet export RUN_DIR --out BASE` a SavedModel for TF Serving.
    Your own data: `cervixnet data validate`, then `cervixnet data prepare`.
    """


@main.command()
@click.option(
    "--arch",
    type=click.Choice(ARCHITECTURES),
    default=None,
    help="Network to train [default: from the config, unet-joint].",
)
@_config_option(
    "YAML config merged over the defaults, or a shipped config name: default, paper, plain."
)
@_data_option()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder to create [default: runs/<arch>-<date>-<time>].",
)
@_epochs_option
@_steps_option
@_budget_option
@_batch_size_option
@click.option("--seed", type=int, default=None, help="Override seed (split, shuffling, init).")
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    help="K-fold cross-validation by patient: one run per fold in OUT/fold-k and a summary.",
)
@click.option(
    "--splits",
    "splits_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Reuse the split of a splits.json (from a run or data prepare).",
)
@click.option(
    "--semi-supervised",
    is_flag=True,
    default=None,
    help="Learn from unannotated scans too (training.semi_supervised.enabled): a teacher "
    "run, its pseudo-labels of the manifest's rows with neither mask nor label (and of "
    "--unlabelled), then a student trained on both.",
)
@click.option(
    "--unlabelled",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder of unannotated scans (data.unlabelled), of patients outside val and "
    "test; implies --semi-supervised.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Continue the interrupted run in this folder from its last completed epoch, with "
    "its own config and split; it ends as if it had never stopped.",
)
@_cache_dir_option()
@_user_errors
@_needs_tensorflow
def train(
    arch,
    config_path,
    data,
    out,
    epochs,
    steps,
    budget_minutes,
    batch_size,
    seed,
    folds,
    splits_file,
    semi_supervised,
    unlabelled,
    resume_dir,
    cache_dir,
) -> None:
    """Train a network and write a run folder.

    Settings left `auto` in the config (input size, width, depth, batch size, steps) are
    first planned from the data and this device, as `cervixnet plan` prints them; the plan
    and its reasons head the run's config.yaml. A value you set wins.

    DATA may be a raw data folder (prepared once into the cache: calipers removed, masks
    built from Bézier points, letterboxed into the input) or a folder written by
    `cervixnet data prepare`. The run folder holds config.yaml (fully resolved), plan.json,
    splits.json, model.keras (best epoch by validation Dice), history.csv, TensorBoard logs,
    metrics.json, predictions.csv, postprocessing.json and, for the joint model,
    operating_point.json and markers.json (the label from the mask's measurement, alone and
    with the image, fitted on validation). The figures of the best model, scored at each
    scan's own size with the flipped prediction averaged in (HD95 in mm where the data gives
    the pixel spacing), are printed at the end. With --folds K, OUT holds fold-1 ... fold-K
    run folders, summary.csv and summary.json, and the test figures of every fold with their
    mean ± std are printed.

    The run folder's checkpoint/ holds the state after every epoch: if a run is killed,
    `cervixnet train --resume RUN_DIR` continues it with the same weights, optimiser state,
    learning-rate schedule, data order and augmentation.

    With --semi-supervised (or --unlabelled FOLDER), OUT/teacher is a supervised run, its
    masks of the unannotated training scans go to OUT/pseudo_labels, and the run in OUT is a
    student trained anew on the annotated scans and the surest pseudo-labelled ones.
    """
    from cervixnet.evaluation import format_table
    from cervixnet.runs import cross_validate, format_summary, resume_training
    from cervixnet.runs import train as run_training

    if resume_dir is not None:
        given = {
            "--arch": arch,
            "--config": config_path,
            "--data": data,
            "--out": out,
            "--epochs": epochs,
            "--steps": steps,
            "--budget-minutes": budget_minutes,
            "--batch-size": batch_size,
            "--seed": seed,
            "--folds": folds,
            "--splits": splits_file,
            "--semi-supervised": semi_supervised,
            "--unlabelled": unlabelled,
        }
        clashing = [name for name, value in given.items() if value is not None]
        if clashing:
            raise click.UsageError(
                f"--resume continues a run with its own settings; drop {', '.join(clashing)}"
            )
        result = resume_training(resume_dir, cache_root=cache_dir, echo=click.echo)
        click.echo("")
        click.echo(format_table(result.metrics["splits"]))
        click.echo(f"\nRun folder: {result.run_dir}  ({result.seconds / 60:.1f} min)")
        return

    from cervixnet.config import load_config

    config = load_config(
        config_path,
        overrides={
            "arch": arch,
            "data.path": str(data) if data is not None else None,
            **_training_overrides(epochs, steps, budget_minutes, batch_size),
            "seed": seed,
            "data.splits_file": str(splits_file) if splits_file is not None else None,
            "data.unlabelled": str(unlabelled) if unlabelled is not None else None,
            "training.semi_supervised.enabled": (
                True if semi_supervised or unlabelled is not None else None
            ),
        },
    )
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.arch}{'-cv' if folds else ''}-{stamp}"
    if folds is not None:
        outcome = cross_validate(config, out, folds, cache_root=cache_dir, echo=click.echo)
        click.echo(f"\nTest figures of {folds}-fold cross-validation:")
        click.echo(format_summary(outcome.summary))
        click.echo(f"\nRuns and summary.csv: {outcome.out_dir}  ({outcome.seconds / 60:.1f} min)")
        return
    result = run_training(config, out, cache_root=cache_dir, echo=click.echo)
    click.echo("")
    click.echo(format_table(result.metrics["splits"]))
    click.echo(f"\nRun folder: {result.run_dir}  ({result.seconds / 60:.1f} min)")


@main.command()
@click.argument("data", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--arch",
    type=click.Choice(ARCHITECTURES),
    default=None,
    help="Network to plan for [default: from the config, unet-joint].",
)
@_config_option(
    "YAML config merged over the defaults, or a shipped config name: default, paper, plain."
)
@_epochs_option
@_steps_option
@_budget_option
@_batch_size_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the planned configuration, with the reasons, to this YAML file "
    "(train with it: cervixnet train --config FILE).",
)
@_cache_dir_option()
@_user_errors
@_needs_tensorflow
def plan(data, arch, config_path, epochs, steps, budget_minutes, batch_size, out, cache_dir):
    """Plan a run from a data set's fingerprint and this device, and print why.

    DATA is a data folder with manifest.csv (or the manifest) [default: the built-in
    synthetic set]. The fingerprint: image sizes and aspect ratios, pixel spacing, how much
    of each image the mask covers, the label balance, images and patients. Every setting left
    `auto` is then decided: an input size that keeps the median aspect ratio (long side up to
    192 on a CPU, 512 on a GPU), the network's width and depth, the batch size that fits the
    device's memory, and as many optimizer steps as fit 90 % of the time budget, timed on a
    few real training steps here (budget: 5 minutes on a CPU, 30 on a GPU, or
    --budget-minutes). `cervixnet train` makes the same plan. A value you set wins.
    """
    from cervixnet.config import load_config, save_config
    from cervixnet.data.fingerprint import fingerprint
    from cervixnet.data.sources import resolve_data
    from cervixnet.training.plan import make_plan, this_device

    config = load_config(
        config_path,
        overrides={
            "arch": arch,
            "data.path": str(data) if data is not None else None,
            **_training_overrides(epochs, steps, budget_minutes, batch_size),
        },
    )
    if out is not None and out.exists():
        raise click.UsageError(f"--out {out}: exists; choose a new file so nothing is overwritten")
    source = resolve_data(config, cache_dir)
    made = make_plan(config, fingerprint(source), this_device())
    click.echo(made.format())
    if out is not None:
        planned = made.apply(config).replace({"data.path": str(source.parent)})
        save_config(planned, out, comment=made.comment())
        click.echo(f"Planned configuration: {out}")


@main.command()
@click.option(
    "--archs",
    default="unet,fcn,deeplabv3",
    show_default=True,
    help="Comma-separated architectures to compare.",
)
@_config_option("YAML config shared by every network (only the architecture changes).")
@_data_option()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the runs and table1.md [default: runs/compare-<date>-<time>].",
)
@_epochs_option
@click.option("--seed", type=int, default=None, help="Override seed (the shared split, init).")
@_cache_dir_option()
@_user_errors
@_needs_tensorflow
def compare(archs, config_path, data, out, epochs, seed, cache_dir) -> None:
    """Train several networks on one split and write the paper's Table 1.

    Every network gets the same data, split, losses, optimiser and number of epochs; OUT
    holds one run folder per network, the shared splits.json, and table1.md / table1.json
    with mean IoU ± std for train, val and test, parameter counts and training times.
    """
    from cervixnet.config import load_config
    from cervixnet.runs import compare_architectures, format_comparison

    config = load_config(
        config_path,
        overrides={
            "data.path": str(data) if data is not None else None,
            "training.epochs": epochs,
            "seed": seed,
        },
    )
    if out is None:
        out = Path("runs") / f"compare-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    names = tuple(a.strip() for a in archs.split(",") if a.strip())
    result = compare_architectures(config, out, names, cache_root=cache_dir, echo=click.echo)
    click.echo("")
    click.echo(format_comparison(result.table))
    click.echo(f"Runs and table1.md: {result.out_dir}  ({result.seconds / 60:.1f} min)")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_data_option("Evaluate on this data folder instead of the run's own [default: the run's data].")
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train", "all"]),
    default="test",
    show_default=True,
    help="Which set of the run's split to score.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder [default: RUN_DIR/evaluation-<split>].",
)
@click.option(
    "--threshold-rule",
    type=click.Choice(["youden", "sensitivity", "fpr", "fixed"]),
    default="youden",
    show_default=True,
    help="How the operating threshold is chosen on the validation split.",
)
@click.option(
    "--target",
    type=float,
    default=None,
    help="Target of the rule: sensitivity, false positive rate, or the fixed threshold.",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="Patient resamples for the 95 % confidence intervals.",
)
@click.option(
    "--gradcam",
    "gradcam_images",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Grad-CAM overlays for this many evaluated images (joint model).",
)
@_cache_dir_option("prepared data is")
@_unsafe_option
@_user_errors
@_needs_tensorflow
def evaluate(
    run_dir,
    data,
    split,
    out,
    threshold_rule,
    target,
    n_bootstrap,
    gradcam_images,
    cache_dir,
    unsafe,
) -> None:
    """Score a trained run: tables with 95 % intervals, an operating point, figures.

    The label threshold is chosen on the run's validation split (Youden's J by default)
    and applied unchanged to the evaluated split. Writes report.md, report.json,
    predictions.csv, and as PNG and PDF the ROC curve (with its patient-bootstrap band) and
    precision-recall curve, the confusion matrix, calibration, training curves and
    segmentation overlays (best, median, worst by IoU); Grad-CAM overlays; and prints the
    tables. Distances and the measurements of each predicted mask (cervical length, head
    circumference, area) are in mm where the data gives the pixel spacing. A manifest column
    of a measurement's name (e.g. head_circumference_mm) is its reference: its agreement
    (MAE, bias, limits of agreement) and a Bland-Altman figure. A joint run's markers.json
    adds the label predicted by the measurement alone, the image model and both, with AUCs,
    DeLong tests and a decision curve.
    """
    from cervixnet.explain import gradcam_overlays
    from cervixnet.reporting import evaluate_run, format_tables

    result = evaluate_run(
        run_dir,
        data=data,
        split=split,
        out_dir=out,
        threshold_rule=threshold_rule,
        target=target,
        n_bootstrap=n_bootstrap,
        gradcam_images=gradcam_images,
        cache_root=cache_dir,
        echo=click.echo,
        unsafe=unsafe,
        explain=gradcam_overlays,
    )
    click.echo("")
    click.echo(format_tables(result.report))
    click.echo(f"\nReport: {result.out_dir / 'report.md'} ({len(result.files)} files)")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder for the overlays."
)
@click.option(
    "--method",
    type=click.Choice(["gradcam", "gradcam++", "scorecam"]),
    default="gradcam",
    show_default=True,
)
@click.option(
    "--layer",
    default=None,
    help="Layer to explain [default: the last feature map the label branch reads].",
)
@_unsafe_option
@_user_errors
@_needs_tensorflow
def gradcam(model_path, images, out, method, layer, unsafe) -> None:
    """Class-activation maps of the preterm probability, as overlays.

    MODEL is a run folder or its model.keras (a joint model). Each image is prepared exactly
    as in training (calipers filled, grayscale, resized) and OUT gets one PNG per image: the
    heat map on the image, the predicted mask outline and p(preterm) in the corner.
    """
    from cervixnet.inference import explain_files

    written = explain_files(model_path, images, out, method=method, layer=layer, unsafe=unsafe)
    for path in written:
        click.echo(str(path))


def _spacing(context, parameter, value: str | None) -> tuple[float, float] | None:
    """``--spacing`` as ``(dy, dx)`` mm: one number, or two separated by a comma."""
    if value is None:
        return None
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(math.isfinite(n) and n > 0 for n in numbers):
        raise click.BadParameter(
            f"expected mm per pixel, one number (0.2) or dy,dx (0.2,0.25), each > 0. "
            f"Received: {value!r}"
        )
    return (numbers[0], numbers[-1])


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new or empty)."
)
@click.option(
    "--spacing",
    callback=_spacing,
    metavar="MM|DY,DX",
    help="Pixel spacing of the image files, in mm per pixel: measurements in mm, not pixels. "
    "A data set gives its own, per row.",
)
@_unsafe_option
@_user_errors
@_needs_tensorflow
def predict(model_path, images, out, spacing, unsafe) -> None:
    """Segment new images, measure the masks and predict p(preterm).

    MODEL is a run folder, its model.keras, a --folds folder or an export. IMAGES are image
    files, ultrasound DICOM files (their first frame, with the pixel spacing of their tissue
    region), or one data set (its folder or manifest.csv), whose rows give each image's pixel
    spacing. Each image is prepared as in training (calipers filled, grayscale, resized); OUT
    gets masks/ (each at its image's own size), overlays/ and predictions.csv with the
    probability, the predicted class at the run's operating threshold (chosen on validation;
    0.5 when the run has none) and the measurements of each mask: cervical_length_mm,
    head_circumference_mm and area_mm2 where the spacing is known, else the same in pixels
    (_px, _px2); with the run's markers.json, combined_probability, the label from the
    measurement and the image together.
    """
    from cervixnet.inference import manifest_images, predict_files

    spacings = None
    data_set = len(images) == 1 and (
        (images[0] / "manifest.csv").is_file() or images[0].suffix.lower() == ".csv"
    )
    if data_set:
        images, spacings = manifest_images(images[0])
        if spacings is not None and spacing is not None:
            raise click.BadParameter(
                "the data set gives each row's spacing; leave --spacing out", param_hint="--spacing"
            )
    if spacings is None and spacing is not None:
        spacings = [spacing] * len(images)
    table = predict_files(model_path, images, out, spacings=spacings, unsafe=unsafe)
    click.echo(table.read_text(encoding="utf-8").rstrip())
    click.echo(f"\nWrote {len(images)} masks and overlays to {table.parent}")


@main.command()
@click.argument("model_path", metavar="RUN_DIR|MODEL", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="SavedModel: the base folder TF Serving watches (versions go in BASE/<N>). "
    "ONNX: the .onnx file to write.",
)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["savedmodel", "onnx"]),
    default="savedmodel",
    show_default=True,
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="SavedModel version folder [default: one above the highest in BASE, or 1].",
)
@click.option(
    "--mask-size",
    type=click.IntRange(min=1),
    nargs=2,
    default=None,
    metavar="H W",
    help="Size of the mask returned by predict_image_bytes [default: the model's input size].",
)
@click.option(
    "--fold-batch-norms/--no-fold-batch-norms",
    default=True,
    show_default=True,
    help="SavedModel: serve each float32 batch norm folded into the convolution before it "
    "(the same function to round-off, faster on CPUs; see docs/serving.md).",
)
@_unsafe_option
@_user_errors
@_needs_tensorflow
def export(model_path, out, export_format, version, mask_size, fold_batch_norms, unsafe) -> None:
    """Export a trained model for serving: a TF Serving SavedModel or an ONNX file.

    RUN_DIR may be a --folds folder: the SavedModel then averages every fold model, and each
    model's mirrored pass where the run used test-time augmentation, in one graph. Signatures:
    serving_default (float32 images at the model's input size), members (each member's own
    prediction) and predict_image_bytes (encoded PNG/JPEG of any size, decoded, converted to
    gray, letterboxed and scaled inside the graph). Outputs: mask, uncertainty (the members'
    spread), and for the joint model probability and label (at the run's operating
    threshold). Caliper removal is not in the graph: see docs/serving.md. The export is
    reloaded with plain TensorFlow (or onnxruntime) and checked against the Keras models
    before it is kept.
    """
    from cervixnet.export import export_onnx, export_savedmodel

    if export_format == "onnx":
        result = export_onnx(model_path, out, unsafe=unsafe)
    else:
        result = export_savedmodel(
            model_path,
            out,
            version=version,
            mask_size=tuple(mask_size) if mask_size else None,
            unsafe=unsafe,
            fold_batch_norms=fold_batch_norms,
        )
    for name, signature in result.signatures.items():
        outputs = ", ".join(signature["outputs"])
        click.echo(f"{name}: inputs {', '.join(signature['inputs'])} -> outputs {outputs}")
    if not result.metadata.get("label_output"):
        click.echo("Segmentation-only model: no probability or label output.")
    click.echo(
        f"Exported to {result.path} (verified: max difference {result.max_abs_diff:.2g} from "
        "the Keras model)"
    )


@main.group()
def data() -> None:
    """Create and inspect data sets."""


@data.command()
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new or empty)."
)
@click.option("--n-images", type=click.IntRange(min=10), default=354, show_default=True)
@click.option("--n-preterm", type=click.IntRange(min=1), default=35, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["png", "dicom"]),
    default="png",
    show_default=True,
    help="png: the data set itself. dicom: the same images as ultrasound DICOM files with fake "
    "identities, to try `data import-dicom` on.",
)
@_user_errors
def synth(out, n_images, n_preterm, seed, output_format) -> None:
    """Write the synthetic transvaginal-ultrasound data set in the manifest format.

    Colour images with caliper crosses burnt in, binary masks, and manifest.csv with
    image, patient_id, label, mask plus the generator's latent risk and features;
    generator.json records the generative model and its best possible AUC.

    With --format dicom, OUT gets dicom/ (one ultrasound DICOM per image, the pixel spacing in
    its tissue region, fake names, IDs and UIDs), masks/ (as `data import-dicom --masks`
    reads them), outcomes.csv (the label per fake PatientID) and truth.csv (each file's
    cervical and canal length in mm).
    """
    from cervixnet.data import synthetic

    spec = synthetic.SyntheticSpec(n_images=n_images, n_preterm=n_preterm, seed=seed)
    if output_format == "dicom":
        from cervixnet.data.synthetic_dicom import generate_dicom

        folder = generate_dicom(out, spec)
        click.echo(
            f"Wrote {n_images} ultrasound DICOM files ({n_preterm} preterm) to {folder}; "
            f"import them with: cervixnet data import-dicom {folder / 'dicom'} --masks "
            f"{folder / 'masks'} --labels {folder / 'outcomes.csv'} --salt-file SALT --out DATA"
        )
        return
    manifest = synthetic.generate(out, spec)
    info = synthetic.load_generator_info(manifest.parent) or {}
    best = info.get("best_auc")
    click.echo(
        f"Wrote {n_images} images ({n_preterm} preterm) to {manifest}"
        + (f"; best possible AUC {best:.3f}" if best is not None else "")
    )


def _frames(context, parameter, value: str) -> str | int:
    """``--frames``: first, all, or a frame number from 1."""
    if value in ("first", "all"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"expected first, all or a frame number from 1. Received: {value!r}")


@data.command("import-dicom")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new or empty)."
)
@click.option(
    "--salt-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The secret the pseudonyms are keyed with; created (random) when it does not exist. "
    "Keep it private, apart from the data, and reuse it: the same salt gives the same "
    "patient_id in every import.",
)
@click.option(
    "--labels",
    "outcomes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV of outcomes: label (1 preterm, 0 control) by patient_id (the DICOM PatientID) "
    "or accession_number.",
)
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of mask PNGs: the mask of SOURCE/a/b.dcm is MASKS/a/b.png (first frame).",
)
@click.option(
    "--frames",
    callback=_frames,
    default="first",
    show_default=True,
    metavar="first|all|N",
    help="Which frames of a cine loop become images.",
)
@click.option(
    "--crop", is_flag=True, default=False, help="Cut each image to its tissue region's box."
)
@click.option(
    "--strict",
    is_flag=True,
    default=False,
    help="Write nothing and exit with status 1 if any DICOM file fails [default: import the "
    "others, list the failures].",
)
@click.option(
    "--without-spacing",
    type=click.Choice(["keep", "omit"]),
    default="keep",
    show_default=True,
    help="A scan without a pixel spacing: imported with an empty one (keep), or left out and "
    "listed in the report (omit), so that a folder that mixes both gives a data set in mm.",
)
@_user_errors
def import_dicom(
    source, out, salt_file, outcomes, masks, frames, crop, strict, without_spacing
) -> None:
    """Import the ultrasound DICOM files under SOURCE as a data set, with no identity in it.

    Every DICOM file under SOURCE (recursively; other files are skipped and counted) becomes
    PNG images as the scanner showed them, and one manifest.csv row per image: patient_id (a
    keyed hash of the PatientID), label, mask, the pixel spacing in mm (from the tissue region
    of the Sequence of Ultrasound Regions, or PixelSpacing), the source file and frame.
    import_report.md and import_report.json list the counts, the tags read (none is copied)
    and each file that failed, with its reason; those are left out and the rest imported
    (exit status 0), unless --strict. SOURCE is only read; OUT appears only when complete.
    Then: `cervixnet data prepare OUT` (or `train --data OUT`) fills the caliper marks.
    """
    from cervixnet.data.dicom_import import format_report
    from cervixnet.data.dicom_import import import_dicom as run_import

    files = sum(1 for path in source.rglob("*") if path.is_file())
    with click.progressbar(
        length=files, label="Importing", file=click.get_text_stream("stderr")
    ) as bar:
        result = run_import(
            source,
            out,
            salt_file,
            frames=frames,
            crop=crop,
            outcomes=outcomes,
            masks=masks,
            strict=strict,
            without_spacing=without_spacing,
            progress=bar.update,
        )
    if result.salt_created:
        click.echo(
            f"Created the salt file {salt_file}: keep it private and apart from the data, and "
            "use it again for later imports (the same patient then gets the same patient_id).",
            err=True,
        )
    click.echo(format_report(result.report, privacy=False))
    click.echo(f"Data set: {result.manifest.parent} (the tags read: import_report.md)")
    if result.failures:
        click.echo(
            f"Warning: {len(result.failures)} DICOM file(s) were not imported (listed above).",
            err=True,
        )


@data.command()
@click.argument("manifest", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new or empty)."
)
@_config_option(
    "YAML config whose data section (image_size, annotations, calipers, classes, mask_column, "
    "split) and seed are "
    "used [default: the shipped defaults]."
)
@click.option("--seed", type=int, default=None, help="Override seed (the saved split).")
@_user_errors
@_needs_tensorflow
def prepare(manifest, out, config_path, seed) -> None:
    """Write a cleaned, resized copy of a data set that training reads directly.

    MANIFEST is a data folder or its manifest.csv; it is validated first and never modified.
    Each image has its yellow and green caliper marks filled by Telea inpainting and is
    converted to grayscale; masks come from the mask column or from the Bézier control points
    (bezier column, annotators fused); images and masks are resized to data.image_size. OUT
    gets images/, masks/, manifest.csv, splits.json (the split a run with the same seed makes),
    report.md and report.json (counts per class, site and split, filled caliper pixels,
    inter-annotator IoU) and prepared.json. Train on it with `cervixnet train --data OUT`.
    """
    from cervixnet.config import load_config
    from cervixnet.data.manifest import resolve_manifest_path
    from cervixnet.data.prepare import prepare as prepare_data
    from cervixnet.training.plan import plan_run

    config = load_config(config_path, overrides={"seed": seed})
    source = resolve_manifest_path(manifest)
    config, _ = plan_run(config, source, keys=("data.image_size",))
    with source.open(encoding="utf-8-sig", errors="replace") as handle:
        rows = max(0, sum(1 for _ in handle) - 1)
    with click.progressbar(
        length=rows, label="Preparing", file=click.get_text_stream("stderr")
    ) as bar:
        prepared = prepare_data(source, out, config, progress=bar.update)
    click.echo((prepared.parent / "report.md").read_text(encoding="utf-8"))
    click.echo(f"Prepared data set: {prepared.parent}")


@data.command()
@click.argument("manifest", type=click.Path(exists=True, path_type=Path))
@_config_option(
    "YAML config whose data.classes and data.mask_column say what the masks hold (default: "
    "one class, 0 and 1 or 255, in the mask column)."
)
@_user_errors
def validate(manifest, config_path) -> None:
    """Check every row of a data set and list every problem found.

    MANIFEST is a data folder or its manifest.csv. Each image and mask is decoded; a mask must
    have its image's size and hold 0 and 1 or 255 (class ids 0 to K for K data.classes, each
    class in some mask), Bézier control points must lie inside the image, labels must be
    1, 0 or empty, and a patient has one label. One line per problem (file, row, column,
    reason); the exit status is 1 if there is any. Nothing is written.
    """
    from cervixnet.config import load_config
    from cervixnet.data.manifest import check_manifest

    data_config = load_config(config_path).data
    path, records, problems = check_manifest(
        manifest, decode=True, mask_column=data_config.mask_column, classes=data_config.classes
    )
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {path}")
    patients = {r.patient_id for r in records}
    preterm = sum(r.label == 1 for r in records)
    unknown = sum(r.label is None for r in records)
    click.echo(
        f"OK: {path}: {len(records)} images of {len(patients)} patients, {preterm} preterm, "
        f"{unknown} without a label, {sum(r.mask is None for r in records)} without a mask"
    )


if __name__ == "__main__":
    main()
