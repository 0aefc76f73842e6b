"""Token budgets past the target's context, refused by `lab validate` (and `lab run` before its run directory)
where the target's config.json is on disk: a local checkpoint, the embedded model's cache, a weights-free
preset, the tiny targets. train.max_length was checked only when the train stage had loaded the target."""
import json

import pytest
import yaml

from lab.config import ExperimentConfig
from lab.errors import LabError
from lab.target_context import check_context, context_of_config, target_context
from tests.lab.test_cli_errors import GOOD, assert_one_error_line, lab

TRAINS = {**GOOD, "stages": ["prepare", "train", "evaluate"], "drafters": [{"name": "d", "method": "dspark"}]}


def checkpoint(tmp_path, config) -> str:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    return str(tmp_path / "ckpt")


def experiment(tmp_path, **changes) -> str:
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({**TRAINS, **changes}))
    return "x.yaml"


def test_validate_refuses_train_max_length_past_a_checkpoints_context(tmp_path):
    path = checkpoint(tmp_path, {"model_type": "qwen3", "max_position_embeddings": 1024})
    target = {"name": "mine", "path": path}
    result = lab(["validate", experiment(tmp_path, target=target, train={"max_length": 2048})], tmp_path)
    assert_one_error_line(result, f"x.yaml: train.max_length = 2048 tokens exceeds the context of target mine (1024, "
                                  f"its max_position_embeddings in {path}/config.json); lower it")
    # `lab run` stops at the same line before it creates the run directory (no target loaded, no weights needed)
    result = lab(["run", "x.yaml", "--stages", "train"], tmp_path)
    assert_one_error_line(result, "train.max_length = 2048 tokens exceeds the context of target mine (1024")
    assert not (tmp_path / "runs").exists()
    assert lab(["validate", experiment(tmp_path, target=target, train={"max_length": 1024},
                                       prepare={"max_prompt_tokens": 512, "max_new_tokens": 512},
                                       prompts={"datasets": [{"name": "humaneval"}], "max_prompt_tokens": 512},
                                       decode={"max_new_tokens": 512})], tmp_path).returncode == 0


def test_validate_checks_only_the_stages_the_experiment_runs(tmp_path):
    """A sim-only experiment with a short-context checkpoint is not refused for the default train.max_length."""
    path = checkpoint(tmp_path, {"max_position_embeddings": 256})
    name = experiment(tmp_path, target={"name": "mine", "path": path}, stages=["evaluate"],
                      prompts={"datasets": [{"name": "humaneval"}], "max_prompt_tokens": 200},
                      decode={"max_new_tokens": 56})
    assert lab(["validate", name], tmp_path).returncode == 0
    result = lab(["validate", name, "--set", "decode.max_new_tokens=57"], tmp_path)
    assert_one_error_line(result, "prompts.max_prompt_tokens + decode.max_new_tokens = 257 tokens exceeds the "
                                  "context of target mine (256")


def test_validate_reads_the_embedded_targets_cached_config(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(cache))
    name = experiment(tmp_path, target={"name": "gemma3-270m"}, train={"max_length": 40000})
    assert lab(["validate", name], tmp_path).returncode == 0  # not built yet: the train stage checks it
    (cache / "gemma3-270m").mkdir(parents=True)
    (cache / "gemma3-270m" / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    assert_one_error_line(lab(["validate", name], tmp_path),
                          "train.max_length = 40000 tokens exceeds the context of target gemma3-270m (32768, its "
                          f"max_position_embeddings in {cache}/gemma3-270m/config.json)")


def test_random_presets_and_tiny_targets_are_known_without_files():
    preset = ExperimentConfig.model_validate({**TRAINS, "target": {"name": "qwen3-0.6b", "init": "random"},
                                              "train": {"max_length": 40961}})
    assert target_context(preset.target)[0] == 40960
    with pytest.raises(LabError, match=r"train.max_length = 40961 tokens exceeds the context of target qwen3-0.6b "
                                       r"\(40960, its max_position_embeddings in .*real/presets/qwen3-0.6b.json\)"):
        check_context(preset, ["train"])
    check_context(preset, ["evaluate"])  # the train budget only where train runs
    tiny = ExperimentConfig.model_validate({**TRAINS, "train": {"max_length": 5000}})
    assert target_context(tiny.target) == (4096, "its max_position_embeddings")
    with pytest.raises(LabError, match="train.max_length = 5000"):
        check_context(tiny, ["train"])
    # an untrained drafter alone: train has nothing to train, so no budget
    check_context(ExperimentConfig.model_validate({**GOOD, "train": {"max_length": 5000}}), ["train"])


def test_config_json_forms(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"max_position_embeddings": 999, "text_config": {"max_position_embeddings": 8192}}))
    assert context_of_config(path) == 8192  # a multimodal checkpoint: the text model's context
    path.write_text(json.dumps({"text_config": {"hidden_size": 8}, "max_position_embeddings": 999}))
    assert context_of_config(path) is None  # the text model's default: unknown here, the stage checks it
    path.write_text(json.dumps({"max_position_embeddings": True}))
    assert context_of_config(path) is None
    path.write_text("{not json")
    with pytest.raises(LabError, match=r"config.json: not a readable config.json \(JSONDecodeError\)"):
        context_of_config(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(LabError, match="not a readable config.json"):
        context_of_config(path)


def test_tapped_layers_past_the_targets_depth_are_refused_before_loading(tmp_path):
    """target.tap_layers naming the last layer or one past it failed when the first stage had loaded the target."""
    path = checkpoint(tmp_path, {"max_position_embeddings": 4096, "num_hidden_layers": 8})
    target = {"name": "mine", "path": path, "tap_layers": [1, 7]}
    assert_one_error_line(lab(["validate", experiment(tmp_path, target=target)], tmp_path),
                          "x.yaml: target.tap_layers [1, 7]: ids must lie in 0..6 (the final layer is never tapped; "
                          f"8 layers, its num_hidden_layers in {path}/config.json)")
    assert lab(["validate", experiment(tmp_path, target={**target, "tap_layers": [1, 6]})], tmp_path).returncode == 0
    # a sim-only experiment loads no target: its taps are not checked
    assert lab(["validate", experiment(tmp_path, target=target, stages=["sim"], sim={"policies": [{"kind": "ar"}],
                                       "acceptance": {"source": "parametric"}})], tmp_path).returncode == 0
    tiny = ExperimentConfig.model_validate({**TRAINS, "target": {"name": "tiny-qwen3", "tap_layers": [5]}})
    with pytest.raises(LabError, match=r"ids must lie in 0..4 \(the final layer is never tapped; 6 layers"):
        check_context(tiny, ["evaluate"])


def test_a_profile_grid_past_the_targets_context_or_any_batch_is_refused(tmp_path):
    """profile.context_len of 10^9 (or a batch of 10^12) passed validate; the profile stage then asked torch for
    that cache after the run directory was made."""
    path = checkpoint(tmp_path, {"model_type": "qwen3", "max_position_embeddings": 1024})
    target = {"name": "mine", "path": path}
    profiles = {**TRAINS, "stages": ["profile"], "target": target}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**profiles, "profile": {"context_len": [128, 1020],
                                                                              "query_tokens": [1, 8]}}))
    result = lab(["validate", "p.yaml"], tmp_path)
    assert_one_error_line(result, "p.yaml: profile.context_len + profile.query_tokens = 1028 tokens exceeds the "
                                  "context of target mine (1024")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**profiles, "profile": {"batch": [1, 10**12]}}))
    assert_one_error_line(lab(["validate", "p.yaml"], tmp_path),
                          "profile: Value error, profile.batch 1,000,000,000,000: at most 8,192 requests per step")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**profiles, "profile": {"context_len": [1016]}}))
    assert lab(["validate", "p.yaml"], tmp_path).returncode == 0
