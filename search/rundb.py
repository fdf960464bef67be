"""The run database: one SQLite file per search holding its settings, every generation's planned
candidates and every evaluation, committed as each finishes.

Why a database and not a results CSV rewritten at the end: a supernet evaluation (BN
recalibration + COCO AP) takes minutes, a search runs for hours, and a killed search must lose
at most the evaluations in flight. The file also makes the run resumable *exactly*: the search
re-derives each generation from the committed evaluations (see `tdbnas.search.evolution`) and
checks the re-derived candidates against the stored plan, so a resumed run is the run it
would have been (DyNAS-T carried stale results across runs, IntelLabs/DyNAS-T#89; here a
mismatch is an error).

Same conventions as the latency table (`tdbnas.latency.table`): WAL journal, busy timeout,
short `BEGIN IMMEDIATE` transactions, schema version in `PRAGMA user_version`, the file tagged
with `PRAGMA application_id`, JSON in text columns, no pickle.

Tables:
    meta         key -> JSON value: settings, space, constraints, signature, status, result
    candidates   (generation, position) -> arch, genome, origin, predicted latency per
                 profile, MAdds, params: a generation's candidates, fixed before evaluation
    evaluations  arch -> the candidate's fields plus the fitness dict, the metric, seconds,
                 worker and time; the evaluation cache (keyed by architecture string)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdbnas.latency.table import now
from tdbnas.spaces.sqlite_store import StoreKind, connect, transaction

SCHEMA_VERSION = 1
#: "tdbS" — marks a SQLite file as a tdbnas search run.
APPLICATION_ID = 0x74646253
DB_NAME = "search.sqlite"

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
);
CREATE TABLE candidates (
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    arch TEXT NOT NULL UNIQUE,
    genome TEXT NOT NULL,               -- JSON list of choice indices
    origin TEXT NOT NULL,               -- random, mutation or crossover
    latency TEXT NOT NULL,              -- JSON {profile: predicted ms}
    madds INTEGER,
    params INTEGER,
    planned_at TEXT NOT NULL,
    PRIMARY KEY (generation, position)
);
CREATE TABLE evaluations (
    arch TEXT PRIMARY KEY,
    genome TEXT NOT NULL,
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    origin TEXT NOT NULL,
    latency TEXT NOT NULL,
    madds INTEGER,
    params INTEGER,
    fitness TEXT NOT NULL,              -- JSON object returned by the fitness function
    metric REAL NOT NULL,               -- fitness[settings.metric]
    seconds REAL NOT NULL,
    worker TEXT,
    evaluated_at TEXT NOT NULL
);
"""


class RunDBError(ValueError):
    """A file that is not a usable run database, or a resume that does not match the run."""


STORE = StoreKind("search run", APPLICATION_ID, SCHEMA_VERSION, _SCHEMA, RunDBError)


@dataclass(frozen=True)
class Candidate:
    """A member chosen for evaluation, with everything known before evaluating it."""

    generation: int
    position: int
    arch: str
    genome: tuple[int, ...]
    origin: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    madds: int | None = None
    params: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """A candidate with its fitness: one row of `evaluations`."""

    arch: str
    genome: tuple[int, ...]
    generation: int
    position: int
    origin: str
    latency_ms: dict[str, float]
    madds: int | None
    params: int | None
    fitness: dict[str, Any]
    score: float           # fitness[metric], the maximised value
    seconds: float
    worker: str | None = None
    evaluated_at: str = ""

    @classmethod
    def of(cls, candidate: Candidate, fitness: Mapping[str, Any], score: float, seconds: float,
           worker: str | None = None, evaluated_at: str | None = None) -> Evaluation:
        return cls(candidate.arch, candidate.genome, candidate.generation, candidate.position, candidate.origin,
                   dict(candidate.latency_ms), candidate.madds, candidate.params, dict(fitness), float(score),
                   float(seconds), worker, evaluated_at or now())

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "genome": list(self.genome), "generation": self.generation,
                "position": self.position, "origin": self.origin, "latency_ms": self.latency_ms,
                "madds": self.madds, "params": self.params, "fitness": self.fitness, "score": self.score,
                "seconds": self.seconds, "worker": self.worker, "evaluated_at": self.evaluated_at}


def _dumps(value: Any) -> str:
    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):  # numpy / torch scalars
            return obj.item()
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.dumps(value, sort_keys=True, default=default)


class RunDB:
    """A search run's database (created on first use; `":memory:"` for a throwaway run)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path) if str(path) != ":memory:" else None
        target = ":memory:" if self.path is None else str(self.path)
        if self.path is not None:
            if self.path.is_dir():
                raise RunDBError(f"{self.path} is a directory, not a run database file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(target, STORE, target)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunDB({str(self.path or ':memory:')!r})"

    def _write(self):
        return transaction(self._conn)

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self._write():
            self._conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                               "DO UPDATE SET value = excluded.value", (key, _dumps(value)))

    def begin_run(self, signature: Mapping[str, Any], details: Mapping[str, Any]) -> bool:
        """Store a new run's `signature` (what decides its candidates) and `details`; for an
        existing run, check the signature matches. Returns True when resuming."""
        stored = self.get_meta("signature")
        clean = json.loads(_dumps(dict(signature)))
        if stored is None:
            with self._write():
                for key, value in {"signature": clean, "created": now(), **details}.items():
                    self._conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                                       "DO UPDATE SET value = excluded.value", (key, _dumps(value)))
            return False
        if stored != clean:
            diffs = [f"{key}: stored {stored.get(key)!r}, now {clean.get(key)!r}"
                     for key in sorted(set(stored) | set(clean)) if stored.get(key) != clean.get(key)]
            raise RunDBError(f"{self.path} holds a different search ({'; '.join(diffs)[:1500]}); "
                             "resume it with the same settings, or use another output directory")
        for key, value in details.items():
            self.set_meta(key, value)
        return True

    # ---- candidates ----------------------------------------------------------------------------
    def planned(self, generation: int) -> list[Candidate]:
        rows = self._conn.execute("SELECT generation, position, arch, genome, origin, latency, madds, params "
                                  "FROM candidates WHERE generation = ? ORDER BY position", (generation,))
        return [Candidate(g, p, arch, tuple(json.loads(genome)), origin, json.loads(latency), madds, params)
                for g, p, arch, genome, origin, latency, madds, params in rows]

    def store_plan(self, generation: int, candidates: Sequence[Candidate]) -> None:
        """Store a generation's candidates, or check them against the stored ones (resume)."""
        stored = self.planned(generation)
        if stored:
            mine = [(c.position, c.arch, c.origin) for c in candidates]
            theirs = [(c.position, c.arch, c.origin) for c in stored]
            if mine != theirs:
                first = next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
                raise RunDBError(f"{self.path}: generation {generation} re-derived differently from the stored plan "
                                 f"(first difference at candidate {first}: {len(mine)} vs {len(theirs)} candidates). "
                                 "The latency table, the space or the code changed since the run started; start a "
                                 "new run directory")
            return
        stamp = now()
        with self._write():
            self._conn.executemany(
                "INSERT INTO candidates (generation, position, arch, genome, origin, latency, madds, params, "
                "planned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(c.generation, c.position, c.arch, _dumps(list(c.genome)), c.origin, _dumps(c.latency_ms),
                  c.madds, c.params, stamp) for c in candidates])

    # ---- evaluations ----------------------------------------------------------------------------
    def add(self, evaluation: Evaluation) -> None:
        """Commit one evaluation in its own transaction: once this returns it survives a kill."""
        if not math.isfinite(evaluation.score):
            raise ValueError(f"score of {evaluation.arch} is not finite: {evaluation.score!r}")
        e = evaluation
        with self._write():
            self._conn.execute(
                "INSERT INTO evaluations (arch, genome, generation, position, origin, latency, madds, params, "
                "fitness, metric, seconds, worker, evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.arch, _dumps(list(e.genome)), e.generation, e.position, e.origin, _dumps(e.latency_ms), e.madds,
                 e.params, _dumps(e.fitness), e.score, e.seconds, e.worker, e.evaluated_at))

    def get(self, arch: str) -> Evaluation | None:
        row = self._conn.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE arch = ?", (arch,)).fetchone()
        return None if row is None else _evaluation(row)

    def get_many(self, archs: Iterable[str]) -> dict[str, Evaluation]:
        wanted = list(dict.fromkeys(archs))
        found: dict[str, Evaluation] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE arch IN ({marks})", chunk):
                found[row[0]] = _evaluation(row)
        return found

    def evaluations(self) -> list[Evaluation]:
        """Every evaluation, in plan order (generation, position): independent of finishing order."""
        rows = self._conn.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations ORDER BY generation, position")
        return [_evaluation(row) for row in rows]

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]


_EVAL_COLUMNS = ("arch, genome, generation, position, origin, latency, madds, params, fitness, metric, seconds, "
                 "worker, evaluated_at")


def _evaluation(row: Sequence[Any]) -> Evaluation:
    arch, genome, generation, position, origin, latency, madds, params, fitness, metric, seconds, worker, at = row
    return Evaluation(arch, tuple(json.loads(genome)), generation, position, origin, json.loads(latency), madds,
                      params, json.loads(fitness), metric, seconds, worker, at)


__all__ = ["APPLICATION_ID", "DB_NAME", "SCHEMA_VERSION", "Candidate", "Evaluation", "RunDB", "RunDBError"]
