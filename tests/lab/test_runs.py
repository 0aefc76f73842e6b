"""Run directories: config snapshot, manifest, resume under the same id, refusal of a changed config."""
import json

import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from lab.runs import open_run

BASE = {"name": "r", "prompts": {"datasets": [{"name": "humaneval"}]},
        "drafters": [{"name": "ngram", "method": "ngram"}]}


def test_open_run_writes_config_and_manifest_and_resumes(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path)})
    ctx = open_run(cfg, show_progress=False)
    manifest = json.loads(ctx.path("manifest.json").read_text())
    assert manifest["config_hash"] == cfg.content_hash() and manifest["seed"] == 0
    assert {"git_sha", "git_dirty", "packages", "hardware"} <= set(manifest)
    ctx.mark_done("evaluate", {"groups": 3})
    again = open_run(cfg, show_progress=False)
    assert again.root == ctx.root and again.stage_done("evaluate") and not again.stage_done("sim")


def test_same_run_id_with_another_config_is_refused(tmp_path):
    first = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "fixed"})
    open_run(first, show_progress=False)
    before = (tmp_path / "r" / "fixed" / "config.yaml").read_text()
    changed = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "fixed", "seed": 5})
    with pytest.raises(LabError, match="run_id exists with a different config"):
        open_run(changed, show_progress=False)
    assert (tmp_path / "r" / "fixed" / "config.yaml").read_text() == before
