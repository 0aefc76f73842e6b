"""Step-profile format: write/read round trip, validation naming the file, interpolation in and out of the box."""
import itertools
import json

import pandas as pd
import pytest

from lab.errors import LabError
from sim.step_profile import CSV_NAME, JSON_NAME, read_profile, write_profile

META = {"source": "lab", "model": "tiny", "dtype": "float32", "device": "cpu", "hardware": "cpu AVX2 2 threads",
        "cpu_capability": "AVX2", "threads": 2, "versions": {"torch": "2.13.0"}, "created": "2026-11-26T00:00:00"}


def linear_ms(b, q, c):
    """A step cost that is exactly multilinear in (batch, query_tokens, context_len)."""
    return 2.0 + 0.5 * b + 0.25 * q + 0.001 * c + 0.01 * b * q + 0.0001 * b * c


def grid_rows(batches=(1, 4, 16), queries=(1, 8), contexts=(0, 512, 2048)):
    return [{"batch": b, "query_tokens": q, "context_len": c, "step_ms": linear_ms(b, q, c),
             "step_ms_p90": 1.1 * linear_ms(b, q, c), "repeats": 5}
            for b, q, c in itertools.product(batches, queries, contexts)]


def test_round_trip_from_dir_csv_and_json(tmp_path):
    csv_path = write_profile(tmp_path, grid_rows(), META)
    assert csv_path == tmp_path / CSV_NAME and (tmp_path / JSON_NAME).is_file()
    assert list(pd.read_csv(csv_path).columns) == ["batch", "query_tokens", "context_len", "step_ms",
                                                   "step_ms_p90", "repeats"]
    for where in (tmp_path, tmp_path / CSV_NAME, tmp_path / JSON_NAME):
        prof = read_profile(where)
        assert len(prof) == 18 and prof.meta == META
        assert prof.batch.dtype.kind == "i" and prof.step_ms_median.dtype.kind == "f"
        assert prof.axes == ([1, 4, 16], [1, 8], [0, 512, 2048])


def test_interpolation_exact_on_points_and_multilinear_between(tmp_path):
    write_profile(tmp_path, grid_rows(), META)
    prof = read_profile(tmp_path)
    for row in grid_rows():
        assert prof.step_ms(row["batch"], row["query_tokens"], row["context_len"]) == pytest.approx(row["step_ms"])
    # inside the box and past its top the multilinear function is reproduced exactly
    for point in [(2, 3, 100), (10, 5, 1500), (16, 8, 2048), (32, 8, 2048), (16, 12, 4096)]:
        assert prof.step_ms(*point) == pytest.approx(linear_ms(*point))
    # below the box the smallest measured value is used
    assert prof.step_ms(0.5, 1, 0) == pytest.approx(linear_ms(1, 1, 0))
    many = prof.step_ms_many(4, [1, 2, 8], 512)
    assert many.tolist() == pytest.approx([linear_ms(4, q, 512) for q in (1, 2, 8)])


def test_extension_never_below_the_box(tmp_path):
    rows = grid_rows(batches=(1, 2), queries=(1,), contexts=(0,))
    rows[1]["step_ms"] = 0.5 * rows[0]["step_ms"]  # noisy: batch 2 measured faster than batch 1
    write_profile(tmp_path, rows, META)
    prof = read_profile(tmp_path)
    assert prof.step_ms(100, 1, 0) == pytest.approx(rows[1]["step_ms"])


def test_single_point_axes_are_constant(tmp_path):
    write_profile(tmp_path, grid_rows(batches=(4,), queries=(1,), contexts=(1024,)), META)
    prof = read_profile(tmp_path)
    assert prof.step_ms(64, 7, 9000) == pytest.approx(linear_ms(4, 1, 1024))


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["step_ms_p90"]), "missing ['step_ms_p90']"),
    (lambda f: f.assign(batch=f["batch"] + 0.5), "batch must hold integers"),
    (lambda f: f.assign(context_len=1e308), "context_len must hold integers"),  # was numpy's cast warning + >= 0
    (lambda f: f.assign(step_ms=-1.0), "step_ms must hold positive"),
    (lambda f: f.assign(step_ms="fast"), "step_ms must hold positive"),
    (lambda f: f.assign(query_tokens=0), "query_tokens must be >= 1"),
    (lambda f: f.iloc[1:], "missing batch=1 query_tokens=1 context_len=0"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate row"),
    (lambda f: f.iloc[:0], "no rows"),
])
def test_bad_csv_names_the_file(tmp_path, mutate, message):
    write_profile(tmp_path, grid_rows(), META)
    csv_path = tmp_path / CSV_NAME
    mutate(pd.read_csv(csv_path)).to_csv(csv_path, index=False)
    with pytest.raises(LabError, match=str(csv_path)) as err:
        read_profile(csv_path)
    assert message in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"source": "guess"}, "'source' must be one of"),
    ({"threads": "two"}, "'threads' must be int or null"),
    ({"versions": {"torch": 2}}, "'versions' must map"),
    ({"model": None}, "'model' must be str"),
])
def test_bad_meta_names_the_json(tmp_path, change, message):
    write_profile(tmp_path, grid_rows(), META)
    (tmp_path / JSON_NAME).write_text(json.dumps({**META, **change}))
    with pytest.raises(LabError, match=str(tmp_path / JSON_NAME)) as err:
        read_profile(tmp_path)
    assert message in str(err.value)


def test_missing_meta_key_and_missing_files(tmp_path):
    with pytest.raises(LabError, match="does not exist"):
        read_profile(tmp_path)
    meta = {k: v for k, v in META.items() if k != "created"}
    with pytest.raises(LabError, match="meta needs 'created'"):
        write_profile(tmp_path, grid_rows(), meta)
    assert not (tmp_path / CSV_NAME).exists()  # nothing written when the input is bad


def test_vectorised_matches_scalar(tmp_path):
    rows = grid_rows()
    rows[-1]["step_ms"] = 0.1  # a noisy corner: the extension floor matters
    write_profile(tmp_path, rows, META)
    prof = read_profile(tmp_path)
    b = [0.5, 1, 3, 16, 40, 7]
    q = [1, 2, 8, 9, 3, 20]
    c = [0, 700, 2048, 5000, 100, 3000]
    assert prof.step_ms_many(b, q, c).tolist() == pytest.approx([prof.step_ms(*x) for x in zip(b, q, c)])
    single = grid_rows(batches=(2,), queries=(1, 4), contexts=(64,))
    write_profile(tmp_path / "one", single, META)
    one = read_profile(tmp_path / "one")
    assert one.step_ms_many([1, 5], [2, 8], [0, 999]).tolist() == pytest.approx(
        [one.step_ms(1, 2, 0), one.step_ms(5, 8, 999)])


def test_a_path_that_is_not_a_profile_is_named(tmp_path):
    other = tmp_path / "notes.md"
    other.write_text("# not a profile\n")
    with pytest.raises(LabError, match="notes.md: not a step profile"):
        read_profile(other)
    with pytest.raises(LabError, match="nowhere: step profile directory does not exist"):
        read_profile(tmp_path / "nowhere")
