import pytest

from mfdepth.config import ConfigError, load_config
from mfdepth.data.loading import available_cores, loader_workers


def test_an_integer_is_taken_as_given():
    assert loader_workers(0, "cpu", cores=16, compute_threads=1) == 0
    assert loader_workers(5, "cuda", cores=2) == 5


def test_auto_on_a_cpu_uses_only_the_cores_the_networks_leave_free():
    assert loader_workers("auto", "cpu", cores=2, compute_threads=2) == 0
    assert loader_workers("auto", "cpu", cores=8, compute_threads=8) == 0
    assert loader_workers("auto", "cpu", cores=3, compute_threads=2) == 1
    assert loader_workers("auto", "cpu", cores=16, compute_threads=4) == 2


def test_auto_on_an_accelerator_keeps_one_core_for_the_main_process():
    assert loader_workers("auto", "cuda", cores=16) == 8
    assert loader_workers("auto", "cuda", cores=4) == 3
    assert loader_workers("auto", "mps", cores=1) == 0


def test_available_cores_is_positive():
    assert available_cores() >= 1


def test_config_takes_auto_or_a_count_and_names_the_key_otherwise():
    assert load_config(None, []).data.num_workers == "auto"
    assert load_config(None, ["data.num_workers=3"]).data.num_workers == 3
    with pytest.raises(ConfigError, match="data.num_workers"):
        load_config(None, ["data.num_workers=many"])
    with pytest.raises(ConfigError, match="data.num_workers"):
        load_config(None, ["data.num_workers=-1"])
