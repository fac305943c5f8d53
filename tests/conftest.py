"""Fixtures shared by the test modules."""
import pytest
import mindspore as ms


@pytest.fixture
def graph_mode():
    """GRAPH mode, as train.py runs (and the only mode where set_inputs makes a dynamic shape),
    for one test; the previous mode afterwards."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)
