"""The experiment schema: strict keys, dotted overrides re-validated, every shipped YAML validates."""
from pathlib import Path

import pytest

from lab.config import apply_override, config_from_dict, load_config
from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "t", "prompts": {"datasets": [{"name": "humaneval"}]},
           "drafters": [{"name": "ngram", "method": "ngram"}]}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.stages


def test_defaults_and_run_id_are_stable():
    a, b = config_from_dict(MINIMAL), config_from_dict(MINIMAL)
    assert a.target.name == "gemma3-270m" and a.decode.temperatures == [0.0]
    assert a.resolved_run_id() == b.resolved_run_id()
    c = config_from_dict(MINIMAL, overrides=["decode.max_new_tokens=7"])
    assert c.decode.max_new_tokens == 7 and c.resolved_run_id() != a.resolved_run_id()


def test_overrides_reach_lists_and_parse_yaml_values():
    cfg = config_from_dict(MINIMAL, overrides=["drafters.0.block_size=3", "decode.temperatures=[0, 1.0]"])
    assert cfg.drafters[0].block_size == 3 and cfg.decode.temperatures == [0, 1.0]


@pytest.mark.parametrize("override, fragment", [
    ("decode.max_new_tokens=-1", "decode.max_new_tokens"),
    ("decode.bogus=1", "decode.bogus: unknown key"),
    ("drafters.5.block_size=3", "not an index"),
    ("target.dtype=float8", "target.dtype"),
    ("novalue", "expected KEY.PATH=VALUE"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(LabError, match=fragment.replace(".", r"\.")):
        config_from_dict(MINIMAL, overrides=[override])


def test_unknown_top_level_key_and_missing_section():
    with pytest.raises(LabError, match="surprise: unknown key"):
        config_from_dict({**MINIMAL, "surprise": 1})
    with pytest.raises(LabError, match="need at least one drafter"):
        config_from_dict({k: v for k, v in MINIMAL.items() if k != "drafters"})
    with pytest.raises(LabError, match="name: required key is missing"):
        config_from_dict({k: v for k, v in MINIMAL.items() if k != "name"})
    sim_only = config_from_dict({"name": "s", "stages": ["sim"]})
    assert sim_only.prompts is None and sim_only.drafters == []
    with pytest.raises(LabError, match="needs the experiment's prompts"):
        sim_only.require_real_inputs("evaluate")


def test_apply_override_creates_missing_mappings():
    data = {"a": {"x": [1, 2]}}
    assert apply_override(data, "a.b.c=3") == {"a": {"x": [1, 2], "b": {"c": 3}}}
    assert apply_override(data, "a.x.1=5") == {"a": {"x": [1, 5]}}
    assert data == {"a": {"x": [1, 2]}}  # copy-on-write: the loaded document is never changed
