"""training.intra_op_threads / inter_op_threads size TensorFlow's thread pools; oneDNN is on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cervixnet.config import load_config
from cervixnet.errors import ConfigError
from cervixnet.training.threads import set_thread_pools, thread_pools


def test_pools_are_sized_before_the_first_operation_of_a_process() -> None:
    code = (
        "from cervixnet.training.threads import set_thread_pools, thread_pools\n"
        "set_thread_pools(1, 3)\n"
        "import tensorflow as tf\n"
        "assert float(tf.reduce_sum(tf.ones((4, 4)))) == 16.0\n"
        "print(thread_pools())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.strip().splitlines()[-1] == "{'intra_op_threads': 1, 'inter_op_threads': 3}"
    )


def test_a_started_pool_is_not_resized_silently() -> None:
    import tensorflow as tf

    float(tf.reduce_sum(tf.ones(2)))  # the pools of this process have started
    before = thread_pools()
    set_thread_pools(None, None)  # nothing asked, nothing changes
    set_thread_pools(before["intra_op_threads"] or None, before["inter_op_threads"] or None)
    assert thread_pools() == before
    wanted = before["intra_op_threads"] + 7
    with pytest.raises(ConfigError, match=r"'training.intra_op_threads' = \d+: .*new process"):
        set_thread_pools(wanted, None)
    assert thread_pools() == before


@pytest.mark.parametrize("key", ["intra_op_threads", "inter_op_threads"])
def test_config_takes_a_positive_count_or_null(key: str) -> None:
    assert getattr(load_config(overrides={f"training.{key}": 2}).training, key) == 2
    assert getattr(load_config().training, key) is None
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={f"training.{key}": 0})


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN is asked on x86-64"
)
@pytest.mark.parametrize(("user_setting", "expected"), [(None, "1 True"), ("0", "0 False")])
def test_the_command_asks_for_onednn_on_x86_unless_the_user_said_otherwise(user_setting, expected):
    # TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads: a fresh process each.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    code = (
        "import os\n"
        "import cervixnet\n"
        "assert os.environ.get('TF_ENABLE_ONEDNN_OPTS') == "
        f"{user_setting!r}, 'import cervixnet set it'\n"
        "from cervixnet.cli.quiet import start_tensorflow\n"
        "start_tensorflow()\n"
        "from cervixnet.training.threads import onednn_enabled\n"
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], onednn_enabled())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected
