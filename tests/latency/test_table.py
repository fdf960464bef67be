"""The latency table: durability, concurrency, schema checks, validated import/export."""

import json
import multiprocessing
import sqlite3

import pytest

from tdbnas.latency.table import SCHEMA_VERSION, Calibration, CalibrationPoint, LatencyTable, TableError


def make_table(path, entries=3):
    table = LatencyTable(path)
    table.ensure_profile("cpu", kind="measured", runner="local", environment={"threads": 1, "cpu": "x86"})
    for i in range(entries):
        table.put("cpu", "litert-1.0", f"ir_k3_e{i}@20x20:72>72", 0.5 + i, statistic="median", spread=0.01 * i,
                  samples=[0.5 + i, 0.51 + i, 0.49 + i], environment={"load": 0.1})
    return table


def test_entries_keep_samples_and_are_keyed_by_profile_runtime_and_key(tmp_path):
    table = make_table(tmp_path / "lut.sqlite")
    table.put("cpu", "litert-2.0", "ir_k3_e0@20x20:72>72", 9.0, samples=[9.0])
    entry = table.get("cpu", "ir_k3_e0@20x20:72>72", "litert-1.0")
    assert entry.samples == (0.5, 0.51, 0.49) and entry.environment == {"load": 0.1}
    assert table.get("cpu", "ir_k3_e0@20x20:72>72", "litert-2.0").value_ms == 9.0
    # Re-putting a key replaces it, never duplicates it (UNIQUE(profile, runtime_version, key)).
    table.put("cpu", "litert-1.0", "ir_k3_e0@20x20:72>72", 0.7, samples=[0.7])
    assert table.count("cpu", "litert-1.0") == 3
    assert table.get_many("cpu", ["ir_k3_e0@20x20:72>72", "nope"], "litert-1.0") == {"ir_k3_e0@20x20:72>72": 0.7}
    assert table.missing("cpu", ["b", "ir_k3_e1@20x20:72>72", "a", "b"], "litert-1.0") == ["b", "a"]
    assert table.runtime_versions("cpu")[0] == "litert-1.0"  # most recently measured first
    assert table.missing("edgetpu", ["a"]) == ["a"]  # unknown profile: everything is missing


def test_reopened_table_has_committed_entries(tmp_path):
    make_table(tmp_path / "lut.sqlite").close()
    table = LatencyTable(tmp_path / "lut.sqlite")
    assert table.count("cpu") == 3
    assert sqlite3.connect(tmp_path / "lut.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_profile_and_kind_errors_are_clear(tmp_path):
    table = make_table(tmp_path / "lut.sqlite")
    with pytest.raises(KeyError, match="no profile 'gpu'.*profiles: cpu"):
        table.profile("gpu")
    with pytest.raises(ValueError, match="'cpu' .* is measured, not modelled"):
        table.ensure_profile("cpu", kind="modelled", runner="modelled")
    with pytest.raises(ValueError, match="kind must be one of"):
        table.ensure_profile("x", kind="guessed", runner="local")


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "lut.sqlite"
    make_table(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(TableError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this tdbnas"):
        LatencyTable(path)

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.close()
    with pytest.raises(TableError, match="SQLite database but not a tdbnas latency table.*runs"):
        LatencyTable(other)

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(TableError, match="not a tdbnas latency table"):
        LatencyTable(junk)


def _writer(path, worker, count):
    table = LatencyTable(path)
    table.ensure_profile("cpu", kind="measured", runner="local")
    for i in range(count):
        table.put("cpu", "v1", f"w{worker}-{i}", float(i), samples=[float(i)] * 20)
        table.put("cpu", "v1", "shared", float(worker))  # both processes fight over one row too
    table.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "lut.sqlite"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, w, 150)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    table = LatencyTable(path)
    keys = {entry.key for entry in table.entries("cpu")}
    assert keys == {f"w{w}-{i}" for w in range(2) for i in range(150)} | {"shared"}


def test_json_round_trip_keeps_profiles_calibration_and_samples(tmp_path):
    table = make_table(tmp_path / "a.sqlite")
    calibration = Calibration(1.2, 0.5, "litert-1.0", (CalibrationPoint("conv_k3_s2_c32", (320, 320), 10.0, 12.5),),
                              "2026-01-01", "test")
    table.set_calibration("cpu", calibration)
    table.ensure_profile("edgetpu", kind="modelled", runner="modelled")
    table.put("edgetpu", "modelled-edgetpu-v1", "k", 0.1, statistic="modelled")
    assert table.export_json(tmp_path / "out.json") == 4
    other = LatencyTable(tmp_path / "b.sqlite")
    assert other.import_json(tmp_path / "out.json") == 4
    assert other.profile("cpu").calibration == calibration
    assert other.profile("edgetpu").kind == "modelled"
    assert list(other.entries()) == list(table.entries())
    assert other.import_json(tmp_path / "out.json") == 0  # existing entries win by default


def test_csv_round_trip(tmp_path):
    table = make_table(tmp_path / "a.sqlite")
    assert table.export_csv(tmp_path / "out.csv") == 3
    other = LatencyTable(tmp_path / "b.sqlite")
    assert other.import_file(tmp_path / "out.csv") == 3
    assert list(other.entries()) == list(table.entries())
    assert other.profile("cpu").kind == "measured"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["entries"][1].update(value_ms="fast"), r"entry 2 \(key 'ir_k3_e1@20x20:72>72'\): value_ms must be"),
    (lambda d: d["entries"][0].update(samples=[1, float("inf")]), "entry 1 .*samples must be a list of finite"),
    (lambda d: d["entries"][2].pop("key"), "entry 3: key must be a non-empty string"),
    (lambda d: d["entries"][0].update(profile="ghost"), "entry 1 .*profile 'ghost'.*neither in the file"),
    (lambda d: d["profiles"][0].update(kind="guessed"), "profile 1 .*kind must be one of"),
    (lambda d: d.update(format="something-else"), "not a tdbnas latency-table export"),
])
def test_malformed_json_is_rejected_naming_the_row_and_nothing_is_written(tmp_path, mutate, message):
    make_table(tmp_path / "a.sqlite").export_json(tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    mutate(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    other = LatencyTable(tmp_path / "b.sqlite")
    with pytest.raises(TableError, match=message):
        other.import_json(tmp_path / "bad.json")
    assert other.count() == 0 and other.profile_names() == []


def test_malformed_csv_is_rejected_naming_the_row(tmp_path):
    make_table(tmp_path / "a.sqlite").export_csv(tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",1.5,", ",1.5ms,")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    other = LatencyTable(tmp_path / "b.sqlite")
    with pytest.raises(TableError, match=r"bad.csv: row 3 \(key 'ir_k3_e1@20x20:72>72'\): value_ms must be a number"):
        other.import_csv(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("key,value\na,1\n")
    with pytest.raises(TableError, match="missing columns: profile"):
        other.import_csv(tmp_path / "cols.csv")
    assert other.count() == 0


def test_export_is_atomic_and_leaves_no_temporary_files(tmp_path):
    table = make_table(tmp_path / "a.sqlite")
    target = tmp_path / "out" / "lut.json"
    target.parent.mkdir()
    target.write_text("old")
    table.export_json(target)
    assert json.loads(target.read_text())["format"] == "tdbnas.latency-table"
    assert [p.name for p in target.parent.iterdir()] == ["lut.json"]
