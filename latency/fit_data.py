"""Measured end-to-end latencies from a file: (architecture or genome, ms) pairs, CSV or JSON.

What a user brings from a device nothing here can drive (a phone NPU timed with the vendor's
tool, an Edge TPU board, a published table): one row per network, in any of three forms

    arch      an architecture string (`tdbnas.spaces.ArchSpec`), for architecture-language spaces
    genome    choice indices in slot order: "7 8 1 ..." (spaces, commas or semicolons) or a JSON list
    choices   choice names in slot order, for categorical spaces: "k3_e6 skip k5_e1 ..."

and the latency in a column named `ms` (or another, `target=`). CSV files have a header row;
JSON files hold a list of objects with the same keys (or {"samples": [...]}). Every row is
checked before anything is fitted, and the first bad one is named in a one-line error. Repeated
measurements of one network are merged into their median, so cross-validation never sees the
same network on both sides of a split.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.latency.cost_model import LatencySamples
from tdbnas.spaces import ArchSpec, CategoricalSpace, GenomeSpace, SearchSpace

FORMS = ("arch", "genome", "choices")


def _rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows as dicts, column names) of a CSV or JSON file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read latency data {path}: {exc.strerror}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            data = data["samples"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: expected a list of objects such as {{\"arch\": ..., \"ms\": ...}} "
                             "(or {\"samples\": [...]})")
        columns = sorted({k for row in data for k in row})
        return data, columns
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
        return rows, columns
    raise ValueError(f"latency data must be a .csv or .json file, not {path.name!r}")


def _genome(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{where}: genome {value!r} is not a list of integers") from None
        else:
            items = [t for t in re.split(r"[\s,;]+", text) if t]
    else:
        raise ValueError(f"{where}: genome {value!r} is not a list of integers")
    if not isinstance(items, list) or any(isinstance(x, bool) or not isinstance(x, int | str) for x in items):
        raise ValueError(f"{where}: genome {value!r} is not a list of integers")
    try:
        return tuple(int(x) for x in items)
    except ValueError:
        raise ValueError(f"{where}: genome {value!r} is not a list of integers") from None


def _member(row: dict[str, Any], form: str, space: GenomeSpace, where: str) -> tuple[int, ...]:
    value = row.get(form)
    if value is None or value == "":
        raise ValueError(f"{where}: no {form!r} value")
    if form == "arch":
        if not isinstance(space, SearchSpace):
            raise ValueError(f"space {space.name!r} is categorical: give genomes or choice names, not architectures")
        try:
            return space.encode(ArchSpec.parse(str(value).strip()))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if form == "choices":
        if not isinstance(space, CategoricalSpace):
            raise ValueError(f"choice names need a categorical space; space {space.name!r} takes 'arch' or 'genome'")
        names = value if isinstance(value, list) else [t for t in re.split(r"[\s,;]+", str(value).strip()) if t]
        try:
            return space.genome_of([str(n) for n in names])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    genome = _genome(value, where)
    try:
        return space.check_genome(genome)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _latency(value: Any, target: str, where: str) -> float:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        ms = math.nan
    if isinstance(value, bool) or not (math.isfinite(ms) and ms > 0):
        raise ValueError(f"{where}: {target} must be a positive number of milliseconds, got {value!r}")
    return ms


def read_latencies(path: str | Path, space: GenomeSpace, *, target: str = "ms") -> tuple[LatencySamples, int]:
    """(the samples, how many rows were repeats merged into a median) of a CSV/JSON file."""
    path = Path(path)
    rows, columns = _rows(path)
    if not rows:
        raise ValueError(f"{path} holds no samples")
    forms = [f for f in FORMS if f in columns]
    if len(forms) != 1:
        found = "none" if not forms else " and ".join(repr(f) for f in forms)
        raise ValueError(f"{path}: give exactly one of the columns 'arch', 'genome', 'choices' (found {found}; "
                         f"columns: {', '.join(columns) or 'none'})")
    if target not in columns:
        raise ValueError(f"{path} has no {target!r} column (columns: {', '.join(columns)}); choose one with --target")
    merged: dict[tuple[int, ...], list[float]] = {}
    for number, row in enumerate(rows, start=1):
        where = f"{path.name} {'row' if path.suffix.lower() == '.csv' else 'sample'} {number}"
        genome = _member(row, forms[0], space, where)
        merged.setdefault(genome, []).append(_latency(row.get(target), target, where))
    genomes = np.array(list(merged), dtype=np.int64).reshape(len(merged), len(space.slots))
    latency = np.array([float(np.median(v)) for v in merged.values()])
    return LatencySamples(space.name, genomes, latency), len(rows) - len(merged)


def write_latencies(path: str | Path, space: GenomeSpace, genomes: Iterable[Any], latencies_ms: Iterable[float],
                    *, target: str = "ms") -> Path:
    """A CSV of (genome, ms) rows that `read_latencies` reads back (written atomically)."""
    import io

    from tdbnas.spaces.atomic import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["genome", target])
    for genome, ms in zip(genomes, latencies_ms):
        writer.writerow([" ".join(str(int(g)) for g in space.check_genome(tuple(int(x) for x in genome))),
                         repr(float(ms))])
    return Path(write_text_atomic(path, buffer.getvalue()))


__all__ = ["FORMS", "read_latencies", "write_latencies"]
