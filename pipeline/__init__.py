"""tdbnas.pipeline: `tdbnas run`, the whole flow in one command (profile, supernet, search,
retrain, export, measure, report), resumable stage by stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tdbnas.spaces.atomic import write_text_atomic


def run_pipeline(config: dict[str, Any], *, log=print, until: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of `config` in `config["out"]`; returns the stage records."""
    from tdbnas.pipeline.config import dump
    from tdbnas.pipeline.stages import STAGES, Run, run_stage

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.yaml"
    text = dump(config)
    if saved.is_file() and saved.read_text() != text and any((out / s / "stage.json").exists() for s in STAGES):
        raise ValueError(f"{out} holds a run with other settings ({saved}); use another --out, or the same "
                         "settings to resume it")
    write_text_atomic(saved, text)
    run = Run(config, out, log)
    started = time.perf_counter()
    for stage in STAGES:
        run_stage(run, stage)
        if stage == until:
            break
    log(f"run finished in {(time.perf_counter() - started) / 60:.1f} min this time -> {out}")
    return run.results
