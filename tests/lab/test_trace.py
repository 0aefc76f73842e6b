"""Trace Parquet round trip and the reader's validation."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lab.errors import LabError
from lab.metrics import conditional_rates, counter_acceptance, survival, tau, vllm_counters
from lab.trace import ARROW_SCHEMA, StepRecord, read_traces, write_shard


def record(k, accepted, **kw):
    base = {"run_id": "r", "method": "m", "target": "t", "dataset": "d", "prompt_id": "p0", "table": "rounds",
                "temperature": 0.0, "step": 0, "context_len": 10, "k": k, "accepted": accepted,
                "accept_prob": [1.0] * accepted + [0.0] * (k - accepted), "confidence": [0.5] * k}
    base.update(kw)
    return StepRecord(**base)


def test_round_trip_and_metrics(tmp_path):
    records = [record(3, 3), record(3, 1), record(3, 0), record(2, 2)]
    write_shard(records, tmp_path / "a.parquet")
    frame = read_traces(tmp_path)
    assert len(frame) == 4 and list(frame["accepted"]) == [3, 1, 0, 2]
    assert tau(frame) == pytest.approx((4 + 2 + 1 + 3) / 4)
    assert survival(frame).tolist() == pytest.approx([3 / 4, 2 / 4, 1 / 4])  # over all 4 rounds
    assert conditional_rates(frame).tolist() == pytest.approx([3 / 4, 2 / 3, 1.0])
    assert vllm_counters(frame)["num_accepted_tokens_per_pos"] == [3, 2, 1]

    # the same numbers from the counters alone, as an engine exports them: tau over the rounds that drafted
    derived = counter_acceptance(vllm_counters(frame))
    assert derived["tau"] == pytest.approx(tau(frame)) and derived["survival"] == pytest.approx([3 / 4, 2 / 4, 1 / 4])
    assert derived["draft_acceptance_rate"] == pytest.approx(6 / 11)
    assert counter_acceptance(vllm_counters(frame.iloc[:0])) == {"draft_acceptance_rate": None, "tau": None,
                                                                 "survival": []}


def test_survival_is_per_draft_and_never_rises():
    """Drafts shorter than j (an n-gram drafter's short proposals) count as not reaching j: conditioning on
    drafted >= j made s_j rise with j. A round with no draft (k = 0) is not a draft, as vLLM's num_drafts:
    counting it made s_1 disagree with c_1."""
    import pandas as pd

    frame = pd.DataFrame({"k": [1, 1, 1, 4, 0], "accepted": [0, 0, 0, 4, 0]})
    s = survival(frame)
    assert s.tolist() == pytest.approx([1 / 4] * 4)
    assert (np.diff(s) <= 0).all() and s[0] == conditional_rates(frame)[0]
    assert survival(frame[frame["k"] == 0]).shape == (0,)  # no draft: no position
    assert np.isnan(survival(frame[frame["k"] == 0], max_k=2)).all()
    # the conditional rate is the one conditioned on reaching (and drafting) position j
    assert conditional_rates(frame).tolist() == pytest.approx([1 / 4, 1.0, 1.0, 1.0])
    assert survival(frame.iloc[:0], max_k=3).shape == (3,)


def test_writer_refuses_inconsistent_records(tmp_path):
    with pytest.raises(LabError, match="accepted=4 outside 0..k=3"):
        bad = record(3, 3)
        bad.accepted = 4
        write_shard([bad], tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.set_column(t.schema.get_field_index("accepted"), "accepted", pa.array([5], pa.int16())),
     "outside 0..k"),
    (lambda t: t.set_column(t.schema.get_field_index("confidence"), "confidence",
                            pa.array([[0.1]], pa.list_(pa.float32()))), "len\\(confidence\\)=1 but k=3"),
    (lambda t: t.replace_schema_metadata({b"dspark_lab_schema_version": b"99"}), "schema version 99"),
    (lambda t: t.replace_schema_metadata({}), "not a DSpark Lab trace"),
    (lambda t: t.drop_columns(["k"]), "missing columns"),
    # session 37 audit: each of these was a TypeError, ValueError or OSError traceback, or a row with k=nan
    (lambda t: t.set_column(t.schema.get_field_index("k"), "k", pa.array(["3"])),
     "trace column k has type string, expected int16"),
    (lambda t: t.replace_schema_metadata({b"dspark_lab_schema_version": b"v1"}), "trace schema version v1"),
    (lambda t: t.set_column(t.schema.get_field_index("k"), "k", pa.array([None], pa.int16())),
     "trace column k has 1 null value"),
    (lambda t: t.set_column(t.schema.get_field_index("table"), "table", pa.array([None], pa.string())),
     "trace column table has 1 null value"),
])
def test_reader_rejects_bad_traces(tmp_path, mutate, message):
    from lab.trace import records_to_table

    table = mutate(records_to_table([record(3, 1)]))
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(LabError, match=message):
        read_traces(tmp_path / "x.parquet")


def test_reader_rejects_garbage_file(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LabError, match="not a readable Parquet trace"):
        read_traces(tmp_path)
    assert ARROW_SCHEMA.field("k").type == pa.int16()


def test_reader_reads_wider_columns_of_another_writer(tmp_path):
    """int32 for int16, float64 for float32, large strings: the same trace, read (not refused as a wrong type)."""
    from lab.trace import records_to_table

    table = records_to_table([record(3, 1), record(2, 2)])
    wide = pa.table({name: (table.column(name).cast(pa.int32()) if name in ("k", "accepted") else
                            table.column(name).cast(pa.float64()) if name == "temperature" else
                            table.column(name).cast(pa.large_string()) if name == "method" else table.column(name))
                     for name in table.column_names}).replace_schema_metadata(table.schema.metadata)
    pq.write_table(wide, tmp_path / "wide.parquet")
    assert list(read_traces(tmp_path / "wide.parquet")["accepted"]) == [1, 2]


def test_reader_names_a_trace_whose_data_pages_are_damaged(tmp_path):
    """The footer whole, a data page overwritten: one LabError naming the file, not pyarrow's OSError."""
    path = write_shard([record(3, 1)] * 3, tmp_path / "x.parquet")
    data = bytearray(path.read_bytes())
    data[8:400] = b"\xab" * 392  # the first column chunk's pages; the footer (its schema) at the end stays
    path.write_bytes(bytes(data))
    with pytest.raises(LabError, match=r"x.parquet: not a readable Parquet trace, its data is damaged"):
        read_traces(path)


def test_reader_refuses_a_folder_of_two_runs_naming_the_files(tmp_path):
    """Another run's shard copied into traces/ mixed its rows into tau silently: now one line per run_id."""
    write_shard([record(3, 3)], tmp_path / "a.parquet")
    write_shard([record(3, 1)], tmp_path / "b.parquet")
    write_shard([record(3, 0, run_id="other")], tmp_path / "c.parquet")
    with pytest.raises(LabError) as info:
        read_traces(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: shards of 2 runs mixed")
    assert "run_id 'r' in a.parquet, b.parquet; run_id 'other' in c.parquet" in message
    with pytest.raises(LabError, match="run_id 'other' in .*c.parquet"):  # a list of files, likewise
        read_traces([tmp_path / "a.parquet", tmp_path / "c.parquet"])
    assert list(read_traces([tmp_path / "a.parquet", tmp_path / "b.parquet"])["accepted"]) == [3, 1]
    assert list(read_traces(tmp_path / "c.parquet")["run_id"]) == ["other"]  # a single shard reads


def test_reader_refuses_one_shard_of_two_runs(tmp_path):
    write_shard([record(3, 3), record(3, 1, run_id="other")], tmp_path / "m.parquet")
    with pytest.raises(LabError, match=r"m.parquet: shards of 2 runs mixed: run_id 'r' in .*m.parquet; "
                                       r"run_id 'other' in .*m.parquet"):
        read_traces(tmp_path / "m.parquet")
