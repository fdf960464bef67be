"""The latency lookup table: one SQLite file holding measured and modelled op latencies.

Rows are keyed by (profile, runtime version, op key) and keep the raw timing samples and the
environment they were taken in, not only the statistic (two builds of the same runtime can
differ by 1.5x, so a number without its provenance is not reusable). A profile carries its
kind ("measured" on a device, "modelled" by an analytic model), the runner, its environment
and the end-to-end calibration `a * sum + b` with the measurements it was fitted on.

Durability and concurrency: WAL journal, a busy timeout, and every entry written in its own
short transaction, so several profiling processes can share one file and a killed process
loses at most the entry it was measuring. The schema version lives in `PRAGMA user_version`
and the file is tagged with `PRAGMA application_id`, so an older tdbnas refuses a newer file
and nobody mistakes another SQLite database for a table.

Import/export: JSON (everything, including profiles and calibrations) and CSV (entries only,
one per row), both validated row by row on import and written atomically on export. No
pickle anywhere: a table must stay readable across library versions.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdbnas.spaces.sqlite_store import StoreKind, connect, transaction

SCHEMA_VERSION = 1
#: "tdbL" — marks a SQLite file as a tdbnas latency table.
APPLICATION_ID = 0x7464624C
JSON_FORMAT = "tdbnas.latency-table"
KINDS = ("measured", "modelled")
CSV_COLUMNS = ("profile", "kind", "runner", "runtime_version", "key", "value_ms", "statistic", "spread",
               "samples", "measured_at", "environment")

_SCHEMA = """
CREATE TABLE profiles (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('measured', 'modelled')),
    runner TEXT NOT NULL,
    environment TEXT NOT NULL,          -- JSON object
    calibration TEXT,                   -- JSON object (see Calibration) or NULL
    created TEXT NOT NULL
);
CREATE TABLE entries (
    profile TEXT NOT NULL REFERENCES profiles(name),
    runtime_version TEXT NOT NULL,
    key TEXT NOT NULL,
    value_ms REAL NOT NULL,
    statistic TEXT NOT NULL,
    spread REAL,
    samples TEXT NOT NULL,              -- JSON list of per-run milliseconds
    environment TEXT NOT NULL,          -- JSON object
    measured_at TEXT NOT NULL,
    UNIQUE (profile, runtime_version, key)
);
"""


class TableError(ValueError):
    """A file that is not a usable latency table, or a malformed import."""


STORE = StoreKind("latency table", APPLICATION_ID, SCHEMA_VERSION, _SCHEMA, TableError)


@dataclass(frozen=True)
class CalibrationPoint:
    """One end-to-end measurement of a full detector, beside the table's sum for it."""

    arch: str
    resolution: tuple[int, int]
    raw_sum_ms: float
    measured_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "resolution": list(self.resolution), "raw_sum_ms": self.raw_sum_ms,
                "measured_ms": self.measured_ms}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CalibrationPoint:
        return cls(str(data["arch"]), tuple(int(v) for v in data["resolution"]),  # type: ignore[arg-type]
                   float(data["raw_sum_ms"]), float(data["measured_ms"]))


@dataclass(frozen=True)
class Calibration:
    """`predicted = a * (sum of entries) + b`, fitted on `points` for `runtime_version`."""

    a: float = 1.0
    b: float = 0.0
    runtime_version: str | None = None
    points: tuple[CalibrationPoint, ...] = ()
    fitted_at: str = ""
    note: str = ""

    def apply(self, raw_ms: Any) -> Any:
        return self.a * raw_ms + self.b

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "runtime_version": self.runtime_version,
                "points": [p.to_json() for p in self.points], "fitted_at": self.fitted_at, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(float(data["a"]), float(data["b"]), data.get("runtime_version"),
                   tuple(CalibrationPoint.from_json(p) for p in data.get("points", ())),
                   str(data.get("fitted_at", "")), str(data.get("note", "")))


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    runner: str
    environment: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    created: str = ""


@dataclass(frozen=True)
class Entry:
    profile: str
    runtime_version: str
    key: str
    value_ms: float
    statistic: str
    spread: float | None
    samples: tuple[float, ...]
    environment: dict[str, Any]
    measured_at: str


def now() -> str:
    """UTC with microseconds: sorts as text, and orders entries written within one second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class LatencyTable:
    """A latency lookup table in one SQLite file (created on first use).

    >>> table = LatencyTable("/tmp/lut.sqlite")                                  # doctest: +SKIP
    >>> table.ensure_profile("cpu", kind="measured", runner="local", environment={...})
    >>> table.put("cpu", "litert-1.4.0", "ir_k3_e8@20x20:72>72+res", 0.41, samples=[...])
    >>> table.missing("cpu", keys, "litert-1.4.0")
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if self.path.is_dir():
            raise TableError(f"{self.path} is a directory, not a latency table file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(str(self.path), STORE, str(self.path))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LatencyTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyTable({str(self.path)!r})"

    def _write(self):
        return transaction(self._conn)

    # ---- profiles ------------------------------------------------------------------------
    def ensure_profile(self, name: str, *, kind: str, runner: str,
                       environment: Mapping[str, Any] | None = None) -> Profile:
        """The profile `name`, created if absent. An existing profile of another kind is an error."""
        _check_name(name)
        if kind not in KINDS:
            raise ValueError(f"profile kind must be one of {', '.join(KINDS)}, not {kind!r}")
        with self._write():
            row = self._conn.execute("SELECT kind FROM profiles WHERE name = ?", (name,)).fetchone()
            if row is None:
                self._conn.execute("INSERT INTO profiles (name, kind, runner, environment, created) "
                                   "VALUES (?, ?, ?, ?, ?)", (name, kind, runner, _dumps(environment or {}), now()))
            elif row[0] != kind:
                raise ValueError(f"profile {name!r} in {self.path} is {row[0]}, not {kind}; "
                                 "choose another profile name")
        return self.profile(name)

    def profile(self, name: str) -> Profile:
        row = self._conn.execute("SELECT name, kind, runner, environment, calibration, created FROM profiles "
                                 "WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(self.profile_names()) or "none yet"
            raise KeyError(f"no profile {name!r} in {self.path} (profiles: {known}); "
                           f"create it with `tdbnas profile --device ... --profile {name}`")
        return _profile_from_row(row)

    def has_profile(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM profiles WHERE name = ?", (name,)).fetchone() is not None

    def profile_names(self) -> list[str]:
        return [row[0] for row in self._conn.execute("SELECT name FROM profiles ORDER BY name")]

    def profiles(self) -> list[Profile]:
        return [self.profile(name) for name in self.profile_names()]

    def set_calibration(self, name: str, calibration: Calibration | None) -> None:
        with self._write():
            cursor = self._conn.execute("UPDATE profiles SET calibration = ? WHERE name = ?",
                                        (None if calibration is None else _dumps(calibration.to_json()), name))
        if cursor.rowcount == 0:
            self.profile(name)  # raises the KeyError with the list of profiles

    # ---- entries -------------------------------------------------------------------------
    def put(self, profile: str, runtime_version: str, key: str, value_ms: float, *, statistic: str = "median",
            spread: float | None = None, samples: Sequence[float] = (), environment: Mapping[str, Any] | None = None,
            measured_at: str | None = None) -> Entry:
        """Store (or replace) one entry in its own transaction: once this returns, it survives a kill."""
        entry = _validated_entry({"profile": profile, "runtime_version": runtime_version, "key": key,
                                  "value_ms": value_ms, "statistic": statistic, "spread": spread,
                                  "samples": list(samples), "environment": dict(environment or {}),
                                  "measured_at": measured_at or now()}, "entry")
        with self._write():
            self._insert(entry, replace=True)
        return entry

    def put_many(self, entries: Iterable[Entry], *, replace: bool = True) -> int:
        """Many entries in one transaction (imports, modelled profiles); returns how many were written."""
        written = 0
        with self._write():
            for entry in entries:
                written += self._insert(entry, replace=replace)
        return written

    def _insert(self, entry: Entry, *, replace: bool) -> int:
        conflict = ("DO UPDATE SET value_ms = excluded.value_ms, statistic = excluded.statistic, "
                    "spread = excluded.spread, samples = excluded.samples, environment = excluded.environment, "
                    "measured_at = excluded.measured_at") if replace else "DO NOTHING"
        cursor = self._conn.execute(
            "INSERT INTO entries (profile, runtime_version, key, value_ms, statistic, spread, samples, environment, "
            f"measured_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (profile, runtime_version, key) {conflict}",
            (entry.profile, entry.runtime_version, entry.key, entry.value_ms, entry.statistic, entry.spread,
             _dumps(list(entry.samples)), _dumps(entry.environment), entry.measured_at))
        return cursor.rowcount

    def get(self, profile: str, key: str, runtime_version: str | None = None) -> Entry | None:
        version = self.resolve_runtime_version(profile, runtime_version)
        row = self._conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE profile = ? AND runtime_version = ? "
                                 "AND key = ?", (profile, version, key)).fetchone()
        return None if row is None else _entry_from_row(row)

    def get_many(self, profile: str, keys: Iterable[str], runtime_version: str | None = None) -> dict[str, float]:
        """`{key: value_ms}` for the keys present (absent keys are simply not in the result)."""
        version = self.resolve_runtime_version(profile, runtime_version)
        wanted = list(dict.fromkeys(keys))
        found: dict[str, float] = {}
        for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._conn.execute(
                    f"SELECT key, value_ms FROM entries WHERE profile = ? AND runtime_version = ? AND key IN ({marks})",
                    (profile, version, *chunk)):
                found[key] = value
        return found

    def values(self, profile: str, runtime_version: str | None = None) -> dict[str, float]:
        """Every `{key: value_ms}` of one profile and runtime version (what a predictor loads)."""
        version = self.resolve_runtime_version(profile, runtime_version)
        return dict(self._conn.execute("SELECT key, value_ms FROM entries WHERE profile = ? AND runtime_version = ?",
                                       (profile, version)))

    def missing(self, profile: str, keys: Iterable[str], runtime_version: str | None = None) -> list[str]:
        """The keys (in the given order, without repeats) that have no entry yet."""
        wanted = list(dict.fromkeys(keys))
        if not self.has_profile(profile):
            return wanted
        versions = self.runtime_versions(profile)
        if runtime_version is None and not versions:
            return wanted
        present = self.get_many(profile, wanted, runtime_version)
        return [key for key in wanted if key not in present]

    def entries(self, profile: str | None = None, runtime_version: str | None = None) -> Iterator[Entry]:
        query, params = f"SELECT {_ENTRY_COLUMNS} FROM entries", []
        clauses = []
        if profile is not None:
            clauses.append("profile = ?")
            params.append(profile)
        if runtime_version is not None:
            clauses.append("runtime_version = ?")
            params.append(runtime_version)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        for row in self._conn.execute(query + " ORDER BY profile, runtime_version, key", params).fetchall():
            yield _entry_from_row(row)

    def count(self, profile: str | None = None, runtime_version: str | None = None) -> int:
        clauses = [(c, v) for c, v in (("profile = ?", profile), ("runtime_version = ?", runtime_version))
                   if v is not None]
        where = (" WHERE " + " AND ".join(c for c, _ in clauses)) if clauses else ""
        return self._conn.execute(f"SELECT COUNT(*) FROM entries{where}", [v for _, v in clauses]).fetchone()[0]

    def runtime_versions(self, profile: str) -> list[str]:
        """Runtime versions with entries for `profile`, most recently measured first."""
        return [row[0] for row in self._conn.execute(
            "SELECT runtime_version, MAX(measured_at) AS last, MAX(rowid) FROM entries WHERE profile = ? "
            "GROUP BY runtime_version ORDER BY last DESC, MAX(rowid) DESC", (profile,))]

    def resolve_runtime_version(self, profile: str, runtime_version: str | None) -> str:
        """`runtime_version` itself, or (None) the profile's most recently measured one."""
        if runtime_version is not None:
            return runtime_version
        versions = self.runtime_versions(profile)
        if not versions:
            self.profile(profile)  # KeyError listing the profiles when the profile is unknown
            raise KeyError(f"profile {profile!r} in {self.path} has no entries yet; "
                           f"profile it with `tdbnas profile --profile {profile} ...`")
        return versions[0]

    def delete(self, profile: str, keys: Iterable[str] | None = None, runtime_version: str | None = None) -> int:
        """Remove entries (all of the profile's when `keys` is None); returns how many went."""
        clauses, params = ["profile = ?"], [profile]
        if runtime_version is not None:
            clauses.append("runtime_version = ?")
            params.append(runtime_version)
        removed = 0
        with self._write():
            if keys is None:
                return self._conn.execute(f"DELETE FROM entries WHERE {' AND '.join(clauses)}", params).rowcount
            for key in keys:
                removed += self._conn.execute(f"DELETE FROM entries WHERE {' AND '.join(clauses)} AND key = ?",
                                              (*params, key)).rowcount
        return removed

    # ---- import / export -----------------------------------------------------------------
    def to_json_dict(self, profiles: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(profiles) if profiles else self.profile_names()
        for name in names:
            self.profile(name)
        return {"format": JSON_FORMAT, "version": SCHEMA_VERSION,
                "profiles": [_profile_to_json(self.profile(name)) for name in names],
                "entries": [_entry_to_json(e) for name in names for e in self.entries(name)]}

    def export_json(self, path: str | os.PathLike[str], profiles: Sequence[str] | None = None) -> int:
        """Write profiles (with calibrations) and entries; returns the number of entries."""
        data = self.to_json_dict(profiles)
        write_atomic(Path(path), json.dumps(data, indent=1) + "\n")
        return len(data["entries"])

    def export_csv(self, path: str | os.PathLike[str], profiles: Sequence[str] | None = None) -> int:
        """One entry per row (samples and environment as JSON cells). Calibrations are JSON-only."""
        names = list(profiles) if profiles else self.profile_names()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        for name in names:
            prof = self.profile(name)
            for e in self.entries(name):
                writer.writerow([e.profile, prof.kind, prof.runner, e.runtime_version, e.key, repr(e.value_ms),
                                 e.statistic, "" if e.spread is None else repr(e.spread), _dumps(list(e.samples)),
                                 e.measured_at, _dumps(e.environment)])
                rows += 1
        write_atomic(Path(path), buffer.getvalue())
        return rows

    def import_file(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        """Import a `.json` or `.csv` export; by suffix. Returns the number of entries written."""
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            return self.import_json(path, replace=replace)
        if suffix == ".csv":
            return self.import_csv(path, replace=replace)
        raise ValueError(f"cannot tell the format of {path}: expected a .json or .csv file")

    def import_json(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        """Validate the whole file, then write it in one transaction (all or nothing).

        Existing entries are kept unless `replace`; existing profiles keep their settings.
        """
        text = _read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise TableError(f"{path}: not a tdbnas latency-table export (expected \"format\": \"{JSON_FORMAT}\")")
        if not isinstance(data.get("version"), int) or data["version"] > SCHEMA_VERSION:
            raise TableError(f"{path}: export version {data.get('version')!r} is not one this tdbnas reads "
                             f"(up to {SCHEMA_VERSION})")
        raw_profiles, raw_entries = data.get("profiles"), data.get("entries")
        if not isinstance(raw_profiles, list) or not isinstance(raw_entries, list):
            raise TableError(f"{path}: \"profiles\" and \"entries\" must be lists")
        profiles = [_validated_profile(p, f"{path}: profile {n}") for n, p in enumerate(raw_profiles, start=1)]
        entries = [_validated_entry(e, f"{path}: entry {n}") for n, e in enumerate(raw_entries, start=1)]
        return self._import(profiles, entries, replace, str(path))

    def import_csv(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        text = _read_text(path)
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise TableError(f"{path}: not a tdbnas latency-table CSV (missing columns: {', '.join(missing)}; "
                             f"expected {','.join(CSV_COLUMNS)})")
        profiles: dict[str, Profile] = {}
        entries = []
        for row in reader:
            where = f"{path}: row {reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise TableError(f"{where}: wrong number of cells")
            record: dict[str, Any] = dict(row)
            for column in ("samples", "environment"):
                try:
                    record[column] = json.loads(record[column])
                except json.JSONDecodeError:
                    raise TableError(f"{where} (key {row['key']!r}): {column} must be JSON, "
                                     f"got {row[column][:40]!r}") from None
            record["value_ms"] = _csv_float(record["value_ms"], where, row, "value_ms")
            record["spread"] = None if record["spread"] == "" else _csv_float(record["spread"], where, row, "spread")
            entry = _validated_entry(record, where)
            prof = _validated_profile({"name": row["profile"], "kind": row["kind"], "runner": row["runner"],
                                       "environment": record["environment"]}, where)
            if prof.name in profiles and profiles[prof.name].kind != prof.kind:
                raise TableError(f"{where}: profile {prof.name!r} is {prof.kind} here but "
                                 f"{profiles[prof.name].kind} in an earlier row")
            profiles.setdefault(prof.name, prof)
            entries.append(entry)
        return self._import(list(profiles.values()), entries, replace, str(path))

    def _import(self, profiles: list[Profile], entries: list[Entry], replace: bool, source: str) -> int:
        declared = {p.name for p in profiles}
        for n, entry in enumerate(entries, start=1):
            if entry.profile not in declared and not self.has_profile(entry.profile):
                raise TableError(f"{source}: entry {n} (key {entry.key!r}) names profile {entry.profile!r}, "
                                 "which is neither in the file nor in the table")
        with self._write():
            for prof in profiles:
                row = self._conn.execute("SELECT kind FROM profiles WHERE name = ?", (prof.name,)).fetchone()
                if row is None:
                    self._conn.execute(
                        "INSERT INTO profiles (name, kind, runner, environment, calibration, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (prof.name, prof.kind, prof.runner, _dumps(prof.environment),
                         None if prof.calibration is None else _dumps(prof.calibration.to_json()),
                         prof.created or now()))
                elif row[0] != prof.kind:
                    raise TableError(f"{source}: profile {prof.name!r} is {prof.kind} in the file but {row[0]} "
                                     f"in {self.path}")
                elif replace and prof.calibration is not None:
                    self._conn.execute("UPDATE profiles SET calibration = ? WHERE name = ?",
                                       (_dumps(prof.calibration.to_json()), prof.name))
            written = sum(self._insert(entry, replace=replace) for entry in entries)
        return written


_ENTRY_COLUMNS = "profile, runtime_version, key, value_ms, statistic, spread, samples, environment, measured_at"


def _entry_from_row(row: Sequence[Any]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6])), json.loads(row[7]),
                 row[8])


def _profile_from_row(row: Sequence[Any]) -> Profile:
    calibration = None if row[4] is None else Calibration.from_json(json.loads(row[4]))
    return Profile(row[0], row[1], row[2], json.loads(row[3]), calibration, row[5])


def _entry_to_json(entry: Entry) -> dict[str, Any]:
    return {"profile": entry.profile, "runtime_version": entry.runtime_version, "key": entry.key,
            "value_ms": entry.value_ms, "statistic": entry.statistic, "spread": entry.spread,
            "samples": list(entry.samples), "environment": entry.environment, "measured_at": entry.measured_at}


def _profile_to_json(profile: Profile) -> dict[str, Any]:
    return {"name": profile.name, "kind": profile.kind, "runner": profile.runner,
            "environment": profile.environment,
            "calibration": None if profile.calibration is None else profile.calibration.to_json(),
            "created": profile.created}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a profile name is a non-empty string without surrounding spaces, got {name!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validated_entry(data: Any, where: str) -> Entry:
    if not isinstance(data, Mapping):
        raise TableError(f"{where}: expected an object, got {type(data).__name__}")
    key = data.get("key")
    label = f"{where} (key {key!r})" if isinstance(key, str) else where

    def fail(reason: str) -> TableError:
        return TableError(f"{label}: {reason}")

    for name in ("profile", "runtime_version", "key", "statistic", "measured_at"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{name} must be a non-empty string, got {value!r}")
    value_ms = data.get("value_ms")
    if not _finite(value_ms) or value_ms < 0:
        raise fail(f"value_ms must be a finite number >= 0, got {value_ms!r}")
    spread = data.get("spread")
    if spread is not None and (not _finite(spread) or spread < 0):
        raise fail(f"spread must be a finite number >= 0 or null, got {spread!r}")
    samples = data.get("samples", [])
    if not isinstance(samples, (list, tuple)) or not all(_finite(s) and s >= 0 for s in samples):
        raise fail("samples must be a list of finite numbers >= 0")
    environment = data.get("environment", {})
    if not isinstance(environment, Mapping):
        raise fail(f"environment must be an object, got {type(environment).__name__}")
    return Entry(data["profile"], data["runtime_version"], key, float(value_ms), data["statistic"],
                 None if spread is None else float(spread), tuple(float(s) for s in samples), dict(environment),
                 data["measured_at"])


def _validated_profile(data: Any, where: str) -> Profile:
    if not isinstance(data, Mapping):
        raise TableError(f"{where}: expected an object, got {type(data).__name__}")
    name = data.get("name")
    try:
        _check_name(name)
    except ValueError as exc:
        raise TableError(f"{where}: {exc}") from None
    if data.get("kind") not in KINDS:
        raise TableError(f"{where} (profile {name!r}): kind must be one of {', '.join(KINDS)}, "
                         f"got {data.get('kind')!r}")
    if not isinstance(data.get("runner"), str):
        raise TableError(f"{where} (profile {name!r}): runner must be a string")
    environment = data.get("environment", {})
    if not isinstance(environment, Mapping):
        raise TableError(f"{where} (profile {name!r}): environment must be an object")
    calibration = None
    if data.get("calibration") is not None:
        try:
            calibration = Calibration.from_json(data["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"{where} (profile {name!r}): malformed calibration ({exc!r})") from None
        if not (math.isfinite(calibration.a) and math.isfinite(calibration.b)):
            raise TableError(f"{where} (profile {name!r}): calibration a and b must be finite")
    return Profile(name, data["kind"], data["runner"], dict(environment), calibration, str(data.get("created", "")))


def _csv_float(text: str, where: str, row: Mapping[str, str], column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TableError(f"{where} (key {row.get('key')!r}): {column} must be a number, got {text!r}") from None


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TableError(f"{path}: not a text file") from None


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so a reader
    (or a crash) sees either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
