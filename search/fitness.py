"""Fitness of a candidate from a trained supernet: recalibrate its batch norms, then COCO mAP.

DetNAS scores each candidate by loading the supernet, re-estimating the batch-norm statistics
of the candidate's path on training images and evaluating COCO AP on its held-out search
split (`test_server.py::bn_statistic` + `fitness`; reference §2.1-2.2). `SupernetEvaluator`
does the same in one process: it loads the supernet once (a Ray worker holds one), and for
each candidate recalibrates (`recalibration.py`), evaluates with pycocotools on the search
split (`splits.py`), and puts the trained statistics back, so every evaluation starts from
the checkpoint and nothing carries over from one candidate to the next.

Recalibration can be switched off (per evaluator or per call) to measure what it buys, e.g.
the rank correlation of supernet scores with stand-alone mAP with and without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tdbnas.search.recalibration import DEFAULT_RECALIBRATION, RecalibrationSettings, recalibrate_bn
from tdbnas.search.splits import SearchSplit, build_search_split
from tdbnas.search.supernet import Supernet
from tdbnas.search.supernet_train import load_space, load_supernet, read_supernet_run
from tdbnas.spaces import ArchSpec, BlockSpace, as_hw, resolve_arch


class SupernetEvaluator:
    """`evaluate(arch) -> dict` with the COCO numbers of `arch` on the search split.

    `checkpoint` is a supernet run (checkpoint.pt, model.pt or the run directory), whose
    settings give the defaults of `data`, `resolution` and the search split; or a `Supernet`
    in memory, with `data` and `resolution` given (and `search_split` unless the default).
    `space` (a name, description file or `BlockSpace`) overrides the run's recorded one, e.g.
    when its description file moved; the weights must have been trained on it.
    """

    def __init__(self, checkpoint: str | Path | Supernet, data: str | Path | None = None, *,
                 space: str | BlockSpace | None = None, resolution: int | Sequence[int] | None = None,
                 search_split: SearchSplit | None = None,
                 recalibration: RecalibrationSettings = DEFAULT_RECALIBRATION, recalibrate: bool = True,
                 batch_size: int = 32, max_eval_images: int | None = None, device: str = "cpu", workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_eval_images is not None and max_eval_images < 1:
            raise ValueError(f"max_eval_images must be positive, got {max_eval_images}")
        self.recalibration, self.recalibrate = recalibration, recalibrate
        self.batch_size, self.max_eval_images, self.workers = batch_size, max_eval_images, workers
        self.checkpoint: Path | None = None
        if isinstance(checkpoint, Supernet):
            if not data or resolution is None:
                raise ValueError("evaluating a supernet in memory needs data and resolution")
            self.split = search_split or SearchSplit()
            self.data, self.resolution, self.resize = Path(data), as_hw(resolution), "stretch"
            self._load_views()
            self.supernet = checkpoint  # used where it is, in its mode; evaluate() restores both
        else:
            run = read_supernet_run(checkpoint)
            config, self.checkpoint = run.config, run.path
            space = self._resolve_space(space)
            if search_split is not None and search_split != config.search_split:
                raise ValueError(f"{run.path} was trained without the search split {config.search_split}; scoring "
                                 f"on {search_split} would score images the supernet trained on")
            self.split = config.search_split
            self.data = Path(data) if data else Path(config.data)
            self.resolution = as_hw(resolution if resolution is not None else config.resolution)
            self.resize = config.resize
            self._load_views()
            self._check_recorded_split(run.directory / "search_split.json")
            self.supernet = load_supernet(run, self.search_view.num_classes, space).to(_device(device)).eval()

    # ---- setup -------------------------------------------------------------------------------
    def _load_views(self) -> None:
        # Both views with evaluation transforms: recalibration sees training images as search
        # and deployment will (resized, not augmented).
        self.train_view, self.search_view = build_search_split(self.data, self.split, size=self.resolution,
                                                               resize=self.resize)

    @staticmethod
    def _resolve_space(space: str | BlockSpace | None) -> BlockSpace | None:
        """The space to build the supernet over; the weights' space fingerprint then decides
        whether it is the one they were trained on (a name, a moved file and an edited file
        are all judged by content)."""
        return load_space(space) if isinstance(space, str) else space

    def _check_recorded_split(self, path: Path) -> None:
        if not path.is_file():
            return
        recorded = json.loads(path.read_text()).get("search_image_ids")
        if recorded is not None and recorded != self.search_view.image_ids:
            raise ValueError(f"the search split of {self.data} differs from the one recorded in {path} (the "
                             "dataset changed since training?): scores would mix in images the supernet trained on")

    @property
    def settings(self) -> dict[str, Any]:
        """What every score of this evaluator depends on (for run databases and reports)."""
        return {"checkpoint": None if self.checkpoint is None else str(self.checkpoint), "data": str(self.data),
                "space": self.supernet.space.name, "weight_sharing": self.supernet.weight_sharing,
                "resolution": list(self.resolution), "search_split": {"split": self.split.split,
                "fraction": self.split.fraction, "seed": self.split.seed, "images": len(self.search_view)},
                "recalibrate": self.recalibrate, "recalibration": self.recalibration.to_dict(),
                "batch_size": self.batch_size, "max_eval_images": self.max_eval_images}

    # ---- scoring -----------------------------------------------------------------------------
    def evaluate(self, arch: ArchSpec | str, *, recalibrate: bool | None = None) -> dict[str, Any]:
        """COCO numbers of `arch` on the search split, after per-path BN recalibration unless
        switched off. Raises `NotInSpaceError` (a ValueError) for an arch outside the space."""
        from tdbnas.detection.evaluate import evaluate_model

        arch = resolve_arch(arch) if isinstance(arch, str) else arch
        recalibrate = self.recalibrate if recalibrate is None else recalibrate
        path = self.supernet.path(arch)
        buffers = [b for step in path.steps() for b in step.module.buffers()]
        trained = [b.clone() for b in buffers]
        started = time.perf_counter()
        try:
            with self.supernet.activated(arch):
                recalibration = (recalibrate_bn(self.supernet, self.train_view, self.recalibration,
                                                workers=self.workers) if recalibrate else None)
                result = evaluate_model(self.supernet, self.search_view, batch_size=self.batch_size,
                                        workers=self.workers, progress=False, max_images=self.max_eval_images)
        finally:
            with torch.no_grad():
                for buffer, value in zip(buffers, trained):
                    buffer.copy_(value)
        return {"arch": arch.encode(), **result["metrics"], "images": result["images"],
                "detections": result["detections"], "recalibrated": recalibrate,
                "recalibration_images": recalibration["images"] if recalibration else 0,
                "recalibration_batch_size": self.recalibration.batch_size if recalibrate else None,
                "recalibration_seconds": recalibration["seconds"] if recalibration else 0.0,
                "eval_seconds": result["seconds"], "seconds": round(time.perf_counter() - started, 3),
                "resolution": list(self.resolution)}

    def __call__(self, arch: ArchSpec | str) -> dict[str, Any]:
        return self.evaluate(arch)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
