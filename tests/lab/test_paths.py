"""One path expansion for every user-given path: ~ and $VARS, kept as written in the config."""
from pathlib import Path

from lab.config_sim import LengthSpec
from lab.paths import expand_path


def test_expand_path_home_and_vars(monkeypatch, tmp_path):
    monkeypatch.setenv("DSPARK_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert expand_path("$DSPARK_TEST_DIR/a.csv") == tmp_path / "a.csv"
    assert expand_path("${DSPARK_TEST_DIR}/b") == tmp_path / "b"
    assert expand_path("~/c") == tmp_path / "home" / "c"
    assert expand_path(Path("plain/d")) == Path("plain/d")
    assert str(expand_path("$DSPARK_SURELY_UNSET_VAR/x")) == "$DSPARK_SURELY_UNSET_VAR/x"


def test_config_keeps_the_path_as_written():
    spec = LengthSpec(source="csv", csv_path="  $DATA/azure.csv ")
    assert spec.csv_path == "$DATA/azure.csv"
