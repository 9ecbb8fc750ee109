"""`cervixnet compare`: several networks on one split, and the paper's Table 1."""

import json
from pathlib import Path

from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.runs.compare import comparison_table, format_comparison
from tests.conftest import TINY_CONFIG


def test_compare_trains_each_network_on_the_same_split(tiny_dataset: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "compare"
    result = CliRunner().invoke(
        main,
        ["compare", "--archs", "unet,fcn", "--config", str(config), "--data", str(tiny_dataset),
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| unet |" in result.output and "| fcn |" in result.output
    shared = json.loads((out / "splits.json").read_text())
    for arch in ("unet", "fcn"):
        own = json.loads((out / arch / "splits.json").read_text())
        for split in ("train", "val", "test"):
            assert own[split]["patients"] == shared[split]["patients"]
    table = json.loads((out / "table1.json").read_text())
    assert list(table["networks"]) == ["unet", "fcn"]
    for arch, row in table["networks"].items():
        metrics = json.loads((out / arch / "metrics.json").read_text())
        assert row["parameters"] == metrics["parameters"] > 0
        assert row["test"]["iou_mean"] == metrics["splits"]["test"]["segmentation"]["iou_mean"]
    markdown = (out / "table1.md").read_text()
    assert "train IoU" in markdown and "± " in markdown


def test_compare_refuses_unknown_or_repeated_networks(tmp_path: Path):
    for archs in ("unet,resnet", "unet,unet", ""):
        result = CliRunner().invoke(main, ["compare", "--archs", archs, "--out", str(tmp_path)])
        assert result.exit_code == 1 and "--archs" in result.output, archs


def test_format_comparison_layout():
    metrics = {
        "unet": {
            "parameters": 1234,
            "seconds": 90.0,
            "splits": {
                split: {"segmentation": {"iou_mean": 0.9, "iou_std": 0.05, "dice_mean": 0.95,
                                         "dice_std": 0.03, "n_images": 10}}
                for split in ("train", "val", "test")
            },
        }
    }  # fmt: skip
    text = format_comparison({**comparison_table(metrics), "epochs": 3, "image_size": [96, 96]})
    assert "| unet | 1,234 | 1.5 min | 0.900 ± 0.050 | 0.900 ± 0.050 | 0.900 ± 0.050 |" in text
