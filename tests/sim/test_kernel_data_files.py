"""What every kernel-timing file (sim/validation/moe_kernels.yaml, gemm_kernels.yaml, kernels_measured.yaml,
attention_kernels.yaml, gdn_kernels.yaml) and the vLLM memory-log file (vllm_memory.yaml) promise: unique lowercase ids, https sources, a card that is a hardware preset
or `other` with its name. The files' own fields: test_moe_kernels_data.py, test_gemm_kernels_data.py, test_vllm_memory.py,
test_attention_kernels.py."""
from pathlib import Path

import pytest
import yaml

from lab.config_sim import HARDWARE_NAMES

FILES = [Path(__file__).resolve().parents[2] / "sim" / "validation" / name
         for name in ("moe_kernels.yaml", "gemm_kernels.yaml", "kernels_measured.yaml", "vllm_memory.yaml",
                      "attention_kernels.yaml", "gdn_kernels.yaml")]


@pytest.fixture(scope="module", params=FILES, ids=lambda p: p.name)
def runs(request) -> list[dict]:
    data = yaml.safe_load(request.param.read_text())
    assert isinstance(data, dict) and isinstance(data.get("runs"), list) and data["runs"]
    return data["runs"]


def test_ids_unique_and_lowercase(runs):
    ids = [run["id"] for run in runs]
    assert len(ids) == len(set(ids))
    assert all(i == i.lower() and " " not in i for i in ids)


def test_urls_are_https(runs):
    for run in runs:
        for key in ("url", "also_posted"):
            if key in run:
                assert str(run[key]).startswith("https://"), (run["id"], key)


def test_devices_are_presets_or_other(runs):
    for run in runs:
        assert run["device"] in set(HARDWARE_NAMES) | {"other"}, run["id"]
        if run["device"] == "other":
            assert run["device_name"], f"{run['id']}: an `other` device must say which card"


@pytest.mark.parametrize("module", ["sim.gemm_kernels", "sim.attention_kernels", "sim.gdn_kernels", "sim.kernel_roofline"])
def test_a_hand_edited_file_that_repeats_a_run_is_one_error_line(tmp_path, capsys, module):
    """A run pasted twice was read twice (counted twice in every fit and median) by the checks that read the plain
    runs list; the pydantic-validated files (moe_kernels, allreduce, ...) already refused it."""
    import importlib

    tool = importlib.import_module(module)
    first = yaml.safe_load(Path(tool.DEFAULT_FILE).read_text())["runs"][0]
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump({"runs": [first, first]}))
    assert tool.main(["--file", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: runs: repeated ids ['{first['id']}']"
    assert not (tmp_path / "o").exists()
