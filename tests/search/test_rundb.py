"""The run database: format, commits as evaluations finish, and kill/resume equivalence."""

import json
import random
import sqlite3

import pytest

from tdbnas.search import Budget, Constraints, RunDBError, SearchSettings, run_search
from tdbnas.search.rundb import APPLICATION_ID, SCHEMA_VERSION, RunDB

RES = 320
SETTINGS = {"population": 10, "parents": 3, "mutations": 4, "crossovers": 4, "generations": 4}
TOTAL = 40


@pytest.fixture(scope="module")
def constraints(tdb_predictors):
    return Constraints([Budget(tdb_predictors["edgetpu"], 12.0), Budget(tdb_predictors["dsp"], 25.0)],
                       resolution=RES)


def snapshot(run_dir):
    """Everything a run decided, without wall-clock fields (seconds, worker, timestamps)."""
    con = sqlite3.connect(run_dir / "search.sqlite")
    evaluations = con.execute("SELECT arch, genome, generation, position, origin, latency, madds, params, fitness, "
                              "metric FROM evaluations ORDER BY generation, position").fetchall()
    candidates = con.execute("SELECT generation, position, arch, genome, origin, latency, madds, params "
                             "FROM candidates ORDER BY generation, position").fetchall()
    con.close()
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("resumed", "evaluated_in_last_session"):
        result.pop(key)
    for item in [result["best"]]:
        for key in ("seconds", "worker", "evaluated_at"):
            item.pop(key)
    return evaluations, candidates, result, (run_dir / "best_arch.txt").read_text()


@pytest.mark.parametrize("algorithm, kills", [("evolution", 1), ("evolution", 2), ("pareto", 1), ("random", 1)])
def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path, tdb, constraints, counting, algorithm, kills):
    settings = SearchSettings(algorithm=algorithm, seed=3, **SETTINGS)
    reference = counting(tdb)
    run_search(tdb, reference, constraints, settings, tmp_path / "reference", plot=False)
    assert len(reference.calls) == TOTAL

    run_dir = tmp_path / "killed"
    rng = random.Random(f"{algorithm}-{kills}")
    done: list[str] = []
    for _ in range(kills):  # kill at a random evaluation, possibly several times
        die_at = rng.randrange(1, TOTAL - len(done) + 1)
        fitness = counting(tdb, die_at=die_at)
        with pytest.raises(Exception, match=f"killed at evaluation {die_at}"):
            run_search(tdb, fitness, constraints, settings, run_dir)
        done += fitness.calls[:-1]  # the last call died before its result was committed
        with RunDB(run_dir / "search.sqlite") as db:
            assert db.count() == len(done) and db.get_meta("status") == "running"
        assert not (run_dir / "result.json").exists()
    resumed = counting(tdb)
    result = run_search(tdb, resumed, constraints, settings, run_dir, plot=False)
    assert result.resumed and result.evaluated_now == len(resumed.calls) == TOTAL - len(done)
    assert not set(resumed.calls) & set(done)  # cached evaluations are not re-run
    assert snapshot(run_dir) == snapshot(tmp_path / "reference")


def test_a_run_can_be_extended_by_more_generations(tmp_path, tdb, constraints, counting):
    short = SearchSettings(seed=8, **{**SETTINGS, "generations": 2})
    run_search(tdb, counting(tdb), constraints, short, tmp_path / "extended", plot=False)
    longer = SearchSettings(seed=8, **SETTINGS)
    fitness = counting(tdb)
    run_search(tdb, fitness, constraints, longer, tmp_path / "extended", plot=False)
    assert len(fitness.calls) == TOTAL - 20
    run_search(tdb, counting(tdb), constraints, longer, tmp_path / "straight", plot=False)
    assert snapshot(tmp_path / "extended") == snapshot(tmp_path / "straight")


def test_resuming_with_other_settings_is_refused(tmp_path, tdb, tdb_predictors, constraints, counting):
    settings = SearchSettings(seed=1, **{**SETTINGS, "generations": 1})
    run_search(tdb, counting(tdb), constraints, settings, tmp_path)
    with pytest.raises(RunDBError, match="different search .*seed"):
        run_search(tdb, counting(tdb), constraints, SearchSettings(seed=2, **{**SETTINGS, "generations": 1}), tmp_path)
    other = Constraints([Budget(tdb_predictors["edgetpu"], 11.0)], resolution=RES)
    with pytest.raises(RunDBError, match="different search .*constraints"):
        run_search(tdb, counting(tdb), other, settings, tmp_path)


def test_a_plan_that_no_longer_re_derives_is_an_error(tmp_path, tdb, constraints, counting):
    settings = SearchSettings(seed=4, **SETTINGS)
    with pytest.raises(Exception, match="killed"):
        run_search(tdb, counting(tdb, die_at=15), constraints, settings, tmp_path)
    con = sqlite3.connect(tmp_path / "search.sqlite")
    con.execute("UPDATE candidates SET origin = 'random' WHERE generation = 1 AND position = 0")
    con.commit()
    con.close()
    with pytest.raises(RunDBError, match="generation 1 re-derived differently"):
        run_search(tdb, counting(tdb), constraints, settings, tmp_path)


def test_every_evaluation_is_committed_as_it_finishes(tmp_path, tdb, constraints, counting):
    seen_by_reader = []

    def check(arch):  # another connection sees every earlier evaluation while this one runs
        con = sqlite3.connect(tmp_path / "search.sqlite")
        seen_by_reader.append(con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
        con.close()

    fitness = counting(tdb, check=check)
    run_search(tdb, fitness, constraints, SearchSettings(seed=5, **{**SETTINGS, "generations": 2}), tmp_path)
    assert seen_by_reader == list(range(20))


def test_database_format_and_foreign_files(tmp_path):
    path = tmp_path / "search.sqlite"
    with RunDB(path) as db:
        db.set_meta("note", {"a": [1, 2]})
        assert db.get_meta("note") == {"a": [1, 2]} and db.get_meta("missing", 7) == 7
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RunDBError, match="newer than this tdbnas"):
        RunDB(path)
    foreign = tmp_path / "other.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(RunDBError, match="not a tdbnas search run"):
        RunDB(foreign)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello " * 1000)
    with pytest.raises(RunDBError, match="not a tdbnas search run"):
        RunDB(text)
