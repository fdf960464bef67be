"""The accuracy signals a search can rank candidates by, behind one picklable factory.

A signal turns an architecture into `{"score": value, ...}` (higher is better), which the
search maximises (`SearchSettings(metric="score")`):

    signal     needs                    what it is
    supernet   a trained supernet       mAP on the search split after per-path BN recalibration
    entropy    -                        MAE-DET multi-scale entropy at init (`zeroshot.py`)
    zen        -                        Zen-score at init
    naswot     the dataset              NASWOT activation-pattern log-determinant at init
    synflow    -                        SynFlow at init
    gradnorm   the dataset              detection-loss gradient norm at init
    madds      -                        detector multiply-adds (a baseline: "bigger is better")
    params     -                        detector parameters (a baseline)

How far each ranking can be trusted was measured against stand-alone training on the built-in
setting (`benchmarks/signals.py` -> `benchmarks/results/signals.md`); the numbers ship in
`fidelity.json` beside this module, so every search report can state them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tdbnas.spaces import ArchSpec, SSDLiteHead, detector_cost, resolve_arch

#: The scores of `tdbnas.search.zeroshot` (named here too, so settings load without torch).
ZERO_SHOT = ("entropy", "zen", "naswot", "synflow", "gradnorm")
COST_SIGNALS = ("madds", "params")
SIGNALS = ("supernet", *ZERO_SHOT, *COST_SIGNALS)
NEEDS_DATA = {"supernet", "naswot", "gradnorm"}


def shipped_fidelity() -> dict[str, Any]:
    """`fidelity.json`: what `benchmarks/signals.py report` measured and chose."""
    return json.loads(resources.files("tdbnas.search").joinpath("fidelity.json").read_text())


#: The default of `tdbnas search` and `tdbnas run`: the signal `benchmarks/signals.py` measured
#: best among those a default run can afford (`fidelity.json`), else the MAdds baseline.
DEFAULT_SIGNAL: str = shipped_fidelity().get("default", "madds")


def default_signal(has_data: bool) -> str:
    """The default signal for a search with or without a dataset: the measured default, or when
    that one scores real images and there are none, the best measured signal that needs no data."""
    if has_data or DEFAULT_SIGNAL not in NEEDS_DATA:
        return DEFAULT_SIGNAL
    return shipped_fidelity().get("default_without_data", "madds")


def needs_supernet(signal: str) -> bool:
    return signal == "supernet"


def check_signal(signal: str) -> str:
    if signal not in SIGNALS:
        raise ValueError(f"unknown accuracy signal {signal!r}; one of: {', '.join(SIGNALS)}")
    return signal


def measured_fidelity(signal: str) -> dict[str, Any] | None:
    """The signal's measured rank correlation with stand-alone training (built-in setting), or
    None when it was not measured."""
    return shipped_fidelity()["signals"].get(signal)


def fidelity_sentence(signal: str) -> str:
    """One line for reports: which signal ranked the candidates and how far to trust it."""
    found = measured_fidelity(signal)
    if found is None:
        return f"Candidates were ranked by `{signal}`, whose agreement with stand-alone training was not measured."
    variant = f" ({found['row']})" if found.get("row", signal) not in (signal, f"zero-shot {signal}") else ""
    noise = (f"seed noise floor {found['noise_floor']:.3f} mAP" if found.get("noise_floor") is not None
             else "seed noise floor not yet measured")
    partial = f" (a partial ground truth: {found['partial']})" if found.get("partial") else ""
    return (f"Candidates were ranked by `{signal}`{variant}: measured against stand-alone training of "
            f"{found['archs']} architectures{partial} on {found['setting']}, Kendall tau {found['kendall']:.2f} "
            f"(Spearman {found['spearman']:.2f}; {noise}; `benchmarks/results/signals.md`). "
            "On other data or spaces the agreement is unmeasured.")


class _CostSignal:
    def __init__(self, name: str, resolution: tuple[int, int], head: SSDLiteHead):
        self.name, self.resolution, self.head = name, resolution, head

    def evaluate(self, arch: ArchSpec | str) -> dict[str, Any]:
        arch = resolve_arch(arch) if isinstance(arch, str) else arch
        total = detector_cost(arch, self.resolution, self.head.num_classes, head=self.head).total
        return {"score": float(getattr(total, self.name)), "signal": self.name}


class _ZeroShotSignal:
    def __init__(self, name: str, resolution: tuple[int, int], head: SSDLiteHead, data: str | None, seed: int):
        from tdbnas.search.zeroshot import ZeroShotScorer, ZeroShotSettings

        self.name = name
        self.scorer = ZeroShotScorer(resolution=resolution, head=head, data=data, names=(name,),
                                     settings=ZeroShotSettings(seed=seed))

    def evaluate(self, arch: ArchSpec | str) -> dict[str, Any]:
        result = self.scorer.score(arch)
        return {"score": result[self.name], "signal": self.name, "seconds": result["seconds"][self.name]}


class _SupernetSignal:
    def __init__(self, evaluator: Any):
        self.evaluator = evaluator

    def evaluate(self, arch: ArchSpec | str) -> dict[str, Any]:
        result = self.evaluator.evaluate(arch)
        return {**result, "score": result["mAP"], "signal": "supernet"}


@dataclass(frozen=True)
class SignalFactory:
    """Builds the signal's evaluator once per worker (picklable: names, paths and numbers).

    `head` holds `SSDLiteHead` fields (num_classes included); `supernet` is the checkpoint of
    the `supernet` signal, whose `options` go to `SupernetEvaluator` (e.g. recalibration)."""

    signal: str
    resolution: tuple[int, int]
    head: tuple[tuple[str, Any], ...]
    data: str | None = None
    supernet: str | None = None
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        check_signal(self.signal)
        if needs_supernet(self.signal) and not self.supernet:
            raise ValueError("the supernet signal needs a trained supernet (--supernet CKPT)")
        if self.signal in NEEDS_DATA - {"supernet"} and not self.data:
            raise ValueError(f"the {self.signal} signal scores real images: give the dataset (--data DIR)")

    def head_spec(self) -> SSDLiteHead:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.head}
        return SSDLiteHead(**values)

    def check(self) -> None:
        """Fail early, in the driver (the supernet's modules import, the head is valid)."""
        self.head_spec()
        if needs_supernet(self.signal):
            self._supernet_factory().check()

    def _supernet_factory(self):
        from tdbnas.search.parallel import SupernetFactory

        return SupernetFactory(self.supernet, self.data, None, self.resolution, self.options)

    def __call__(self) -> Any:
        if needs_supernet(self.signal):
            return _SupernetSignal(self._supernet_factory()())
        if self.signal in COST_SIGNALS:
            return _CostSignal(self.signal, self.resolution, self.head_spec())
        return _ZeroShotSignal(self.signal, self.resolution, self.head_spec(), self.data, self.seed)


def head_items(head: SSDLiteHead) -> tuple[tuple[str, Any], ...]:
    """An `SSDLiteHead` as the factory's picklable items."""
    import dataclasses

    return tuple((f.name, getattr(head, f.name)) for f in dataclasses.fields(head))
