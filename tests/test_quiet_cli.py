"""A quiet, instant command line: help without TensorFlow, runs without its start-up lines."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cervixnet.cli.quiet import without_startup_noise
from tests.conftest import TINY_CONFIG, run_cli

# Any line TensorFlow's C++ code or absl writes: "I0000 00:00:1796619094.56 3791 port.cc:153] ...".
TENSORFLOW_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|absl::InitializeLog", re.M)

HELP_EVERYWHERE = textwrap.dedent(
    """
    import sys
    import click
    from click.testing import CliRunner
    from cervixnet.cli.main import main

    def paths(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, [*path, name])

    runner = CliRunner()
    for path in paths(main, []):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)
        print(" ".join(path) or "cervixnet")
    heavy = {"tensorflow", "keras", "jax", "torch", "matplotlib", "sklearn", "cv2"}
    print("imported:", sorted(heavy & {name.split(".")[0] for name in sys.modules}))
    """
)


def test_every_help_answers_without_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", HELP_EVERYWHERE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "imported: []"
    commands = set(lines[:-1])
    assert {"cervixnet", "train", "plan", "evaluate", "predict", "export", "data validate"} <= (
        commands
    )
    assert done.stderr == ""


def test_startup_notices_are_dropped_and_everything_else_kept():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR\n"
        "I0000 00:00:1796619070.972290    3714 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796619070.972808    3714 cudart_stub.cc:31] Could not find cuda drivers\n"
        "W0000 00:00:1796619070.972808    3714 cuda_executor.cc:1] could not open NUMA node\n"
        "E0000 00:00:1796619084.250238    3726 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.\n"
        "E0000 00:00:1796619084.250238    3726 op_kernel.cc:1] OOM when allocating tensor\n"
        "UserWarning: something a user can act on\n"
        "Error: data.path: no such folder\n"
    )
    assert without_startup_noise(text) == (
        "E0000 00:00:1796619084.250238    3726 op_kernel.cc:1] OOM when allocating tensor\n"
        "UserWarning: something a user can act on\n"
        "Error: data.path: no such folder\n"
    )


@pytest.mark.slow
def test_train_evaluate_and_predict_print_no_tensorflow_lines(tiny_dataset: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    run = tmp_path / "run"
    image = next((tiny_dataset / "images").glob("*.png"))
    steps = {
        "train": ["train", "--config", str(config), "--data", str(tiny_dataset), "--out", str(run)],
        "evaluate": ["evaluate", str(run), "--bootstrap", "100", "--gradcam", "0"],
        "predict": ["predict", str(run), str(image), "--out", str(tmp_path / "predicted")],
    }
    for name, args in steps.items():
        done = run_cli(*args)
        assert done.returncode == 0, (name, done.stderr[-3000:])
        found = TENSORFLOW_LINE.findall(done.stderr)
        assert not found, (name, done.stderr[-3000:])
        assert "cudart_stub" not in done.stderr and "oneDNN" not in done.stderr
