"""Fixtures shared by the test modules; their helpers are in tests/helpers.py."""
import os
import sys

import pytest
import mindspore as ms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import make_model  # noqa: E402

# The longest modules first, so that the two test processes of run_tests.sh finish together
# (pytest-xdist's loadscope hands modules out in collection order).
LONGEST_FIRST = ["tests/scripts/test_demo.py", "tests/training/test_trainer.py",
                 "tests/training/test_distributed.py", "tests/deploy/test_stream_export.py",
                 "tests/scripts/test_benchmarks.py", "tests/deploy/test_infer_310.py"]


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)          # stable: the rest keep their order


@pytest.fixture
def graph_mode():
    """GRAPH mode, as train.py runs (and the only mode where set_inputs makes a dynamic shape),
    for one test; the previous mode afterwards."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two random tiny networks saved with their recipes (gLN and BN): (folder, {name: net})."""
    directory = str(tmp_path_factory.mktemp("models"))
    return directory, {"gln": make_model(directory, "gln"),
                       "bn": make_model(directory, "bn", norm_type="BN")}

@pytest.fixture
def pynative_mode():
    """PYNATIVE mode for one test, whatever an earlier test left: a graph compiled by
    value_and_grad keeps the parameter values it was compiled with when they are replaced by
    set_data (MindSpore 2.7), which tests that load weights between calls must avoid."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)
