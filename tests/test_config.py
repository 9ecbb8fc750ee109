from pathlib import Path

import pytest

from cervixnet.config import Config, default_config, load_config, save_config, shipped_config_names
from cervixnet.errors import ConfigError


def test_default_yaml_matches_dataclass_defaults():
    # configs/default.yaml documents every default; it must agree with the code's defaults.
    assert default_config() == Config()


def test_shipped_configs_load():
    assert {"default", "paper"} <= set(shipped_config_names())
    paper = load_config("paper")
    assert paper.data.image_size == (256, 256)
    assert paper.model.base_filters == 64
    assert paper.training.batch_size == 4
    assert paper.training.epochs == 500
    assert paper.training.learning_rate == pytest.approx(1e-4)
    assert paper.training.weight_decay == pytest.approx(5e-4)
    assert (paper.loss.alpha, paper.loss.beta) == (0.5, 0.8)
    # The plain recipe fixes everything the plan would decide, for either U-Net.
    from cervixnet.training.plan import auto_keys

    for arch in ("unet", "unet-joint"):
        assert auto_keys(load_config("plain", overrides={"arch": arch})) == []


def test_user_file_merges_over_defaults(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("training:\n  epochs: 3\nmodel:\n  unet-joint:\n    depth: 3\n")
    config = load_config(path)
    assert config.training.epochs == 3
    assert config.training.batch_size == Config().training.batch_size
    assert config.model.builder_kwargs("unet-joint")["depth"] == 3
    default_features = Config().model.unet_joint["classifier_features"]
    assert config.model.builder_kwargs("unet-joint")["classifier_features"] == default_features


def test_overrides_apply_and_none_is_ignored():
    config = load_config(overrides={"training.epochs": 2, "seed": None, "arch": "fcn"})
    assert config.training.epochs == 2
    assert config.seed == Config().seed
    assert config.arch == "fcn"


def test_save_and_reload_round_trip(tmp_path: Path):
    config = load_config("paper", overrides={"seed": 7})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_scientific_notation_strings_are_numbers(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(path).training.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trainig:\n  epochs: 2\n", "unknown key 'trainig' (did you mean 'training'?)"),
        (
            "training:\n  epoch: 2\n",
            "unknown key 'training.epoch' (did you mean 'training.epochs'?)",
        ),
        (
            "training:\n  epochs: two\n",
            "'training.epochs' must be an integer or null. Received: 'two'",
        ),
        (
            "training:\n  epochs: 0\n",
            "'training.epochs' must be an integer >= 1 or null. Received: 0",
        ),
        ("loss:\n  alpha: 1.7\n", "'loss.alpha' must be a number in [0, 1]. Received: 1.7"),
        ("arch: resnet\n", "'arch' must be one of unet, fcn, deeplabv3, unet-joint"),
        ("data:\n  image_size: 128\n", "'data.image_size' must be a list of 2 values"),
        ("data:\n  split: [0.5, 0.5, 0.5]\n", "'data.split' must be three fractions"),
        ("augment: 3\n", "unknown key 'augment'"),
        ("- a\n- b\n", "expected a mapping of keys at the top level"),
        ("training: [\n", "not valid YAML"),
        ("training:\n  jit_compile: maybe\n", "'training.jit_compile'"),
        (
            "data:\n  cache: disk\n",
            "'data.cache' must be true, false or auto. Received: 'disk'",
        ),
        (
            "training:\n  distribution: horovod\n",
            "'training.distribution' must be none, mirrored or multi_worker. Received: 'horovod'",
        ),
        (
            "training:\n  cpu_devices: 0\n",
            "'training.cpu_devices' must be an integer >= 1 or null. Received: 0",
        ),
        ("training:\n  cpu_devices: two\n", "'training.cpu_devices' must be"),
        (
            "training:\n  scale_learning_rate: sqrt\n",
            "'training.scale_learning_rate' must be none or linear. Received: 'sqrt'",
        ),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_distribution_keys_default_to_one_device():
    training = default_config().training
    assert (training.distribution, training.cpu_devices, training.scale_learning_rate) == (
        "none",
        None,
        "none",
    )
    config = load_config(
        overrides={
            "training.distribution": "mirrored",
            "training.cpu_devices": 2,
            "training.scale_learning_rate": "linear",
        }
    )
    assert config.training.distribution == "mirrored"
    assert config.training.cpu_devices == 2
    assert config.training.scale_learning_rate == "linear"


def test_missing_config_file():
    with pytest.raises(ConfigError, match=r"Config file not found: nowhere\.yaml"):
        load_config("nowhere.yaml")
