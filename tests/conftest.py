"""Shared fixtures: tiny random targets (built once per session), offline hub, a scratch run dir."""
import os
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# cpu_linear's auto probes (real/cpu_linear.py) go to a scratch file, not the user's cache; subprocesses inherit it
os.environ["DSPARK_LAB_CPU_LINEAR_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="dspark-cpu-linear-"), "cpu_linear.json")


@pytest.fixture(scope="session")
def tiny_qwen3():
    from real.targets import tiny_target

    return tiny_target("qwen3", dtype="float32")


@pytest.fixture(scope="session")
def tiny_gemma3():
    from real.targets import tiny_target

    return tiny_target("gemma3", dtype="float32")


def pytest_report_header(config):
    """Say when tests/dashboards is left out (no streamlit: see tests/dashboards/conftest.py)."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        return "tests/dashboards not collected: streamlit is not installed (pip install -e '.[dash]')"
    return None
