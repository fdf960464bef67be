"""Search over backbone and pyramid together: the weight-sharing supernet runs each path exactly
as the extracted stand-alone detector does, its cells are shared by every wiring, and the
evolutionary search, latency constraints and supernet training all take a pyramid space."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tdbnas.latency.profiles import get_predictor  # noqa: E402
from tdbnas.search import Budget, Constraints, SearchSettings, SyntheticFitness, run_search  # noqa: E402
from tdbnas.search.supernet import Supernet, space_fingerprint  # noqa: E402
from tdbnas.spaces import PyramidChoices, pyramid_space  # noqa: E402

pytestmark = pytest.mark.torch
RES = 64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space(tiny):
    # The tiny backbone has C3 widths 24/32 (32: no lateral), C4 32/40, C5 48/64 and a C6 block,
    # so P3-P6 come from the backbone and only P7 is an extra level (here a strided conv).
    return pyramid_space(tiny, PyramidChoices(width=32, stack=2, extra="conv", intermediate=1), name="tiny-pyramid")


def _randomise_batchnorms(net, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("sharing", ["none", "in"])
def test_paths_compute_what_the_extracted_detectors_compute(space, sharing):
    torch.manual_seed(0)
    net = Supernet(space, num_classes=3, weight_sharing=sharing)
    _randomise_batchnorms(net)
    net.eval()
    images = torch.randn(2, 3, RES, RES)
    laterals = set()
    for seed in range(4):
        arch = space.sample(seed)
        laterals |= {step is None for step in net.path(arch).laterals}
        with torch.no_grad(), net.activated(arch):
            got = net(images)
        child = net.extract(arch).eval()
        with torch.no_grad():
            want = child(images)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert laterals == {True, False}  # both an identity and a 1x1 lateral were exercised


def test_cells_and_head_are_shared_by_every_wiring(space):
    net = Supernet(space, num_classes=3)
    a, b = space.sample(0), space.sample(1)
    assert a.pyramid != b.pyramid
    plan_a, plan_b = net.path(a), net.path(b)
    assert all(x.module is y.module for row_a, row_b in zip(plan_a.cells, plan_b.cells) for x, y in zip(row_a, row_b))
    assert all(x.module is y.module for x, y in zip(plan_a.box_heads, plan_b.box_heads))
    assert len(plan_a.cells) == 2 and len(plan_a.cells[0]) == 6  # 2 stacks x (1 intermediate + 5 output cells)
    assert space_fingerprint(space) != space_fingerprint(space.backbone)
    # a path trains its own modules: every parameter of the path gets a gradient
    net.train()
    with net.activated(a):
        box, cls = net(torch.randn(2, 3, RES, RES))
        (box.square().mean() + cls.mean()).backward()
    missing = [p for p in net.path_parameters(a) if p.grad is None]
    assert missing == []


def test_evolution_searches_backbone_and_pyramid_under_a_latency_budget(space, tmp_path):
    predictor = get_predictor("edgetpu", RES, space=space, table=_table(tmp_path))
    samples = predictor.predict_many([space.sample(seed) for seed in range(200)], RES)
    budget = float(np.median(samples))
    constraints = Constraints([Budget(predictor, budget)], resolution=RES)
    settings = SearchSettings(population=8, parents=3, mutations=3, crossovers=3, generations=3, seed=1)
    result = run_search(space, SyntheticFitness(space, seed=2), constraints, settings, tmp_path / "run", plot=False)
    assert len(result.evaluations) == 24
    assert all(e.latency_ms["edgetpu"] <= budget for e in result.evaluations)
    origins = {e.origin for e in result.evaluations}
    assert {"mutation", "crossover", "random"} <= origins
    best = space.decode(result.best.genome)
    assert best.pyramid is not None and best.encode() == result.best.arch
    assert (tmp_path / "run" / "best_arch.txt").read_text().strip() == best.encode()
    # mutation and crossover made new pyramids, not only new backbones
    pyramid_genes = list(space.pyramid_genes())
    first = {tuple(e.genome[g] for g in pyramid_genes) for e in result.evaluations if e.generation == 0}
    bred = {tuple(e.genome[g] for g in pyramid_genes) for e in result.evaluations if e.origin != "random"}
    assert bred - first


def _table(tmp_path):
    from tdbnas.latency.table import LatencyTable

    return LatencyTable(tmp_path / "lut.sqlite")


@pytest.mark.slow
def test_a_supernet_over_a_pyramid_space_trains_and_scores(tmp_path, space):
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset
    from tdbnas.search.fitness import SupernetEvaluator
    from tdbnas.search.recalibration import RecalibrationSettings
    from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer, load_space

    write_synthetic_dataset(tmp_path / "data", SynthConfig(num_train=16, num_val=4, image_size=64, seed=3),
                            progress=False)
    (tmp_path / "space.json").write_text(json.dumps(space.to_description()))
    assert load_space(str(tmp_path / "space.json")).slots == space.slots
    config = SupernetTrainConfig(space=str(tmp_path / "space.json"), data=str(tmp_path / "data"), resolution=64,
                                 epochs=1, batch_size=4, lr=0.05, warmup_epochs=0.5, workers=0, progress=False,
                                 threads=1, search_fraction=0.25)
    summary = SupernetTrainer(config, tmp_path / "sn").run()
    assert summary["steps"] == 3
    evaluator = SupernetEvaluator(tmp_path / "sn", recalibration=RecalibrationSettings(images=8, batch_size=4))
    arch = space.sample(5)
    score = evaluator.evaluate(arch)
    assert score["arch"] == arch.encode() and 0.0 <= score["mAP"] <= 1.0 and score["recalibrated"]
