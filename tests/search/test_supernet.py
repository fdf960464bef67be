"""The supernet: one path at a time, only that path learns, extraction equals the path, sizes."""

import collections

import pytest

torch = pytest.importorskip("torch")

from tdbnas.detection.model import SSDLite, count_parameters  # noqa: E402
from tdbnas.search.supernet import WEIGHT_SHARING, Supernet, sample_path, supernet_size  # noqa: E402
from tdbnas.spaces import BlockSpace, NotInSpaceError, SSDLiteHead, get_reference  # noqa: E402

pytestmark = pytest.mark.torch

# 5 stride-2 blocks reach C5 (stride 32); 2-3 choices per slot, width choices in every block after
# the stem, ops of three kinds (IBN, fused IBN, Tucker) and skips.
TINY = {"name": "tiny", "blocks": [
    {"name": "stem", "layers": 1, "stride": 2, "widths": [8], "ops": ["conv_k3"]},
    {"name": "b1", "layers": 2, "stride": 2, "widths": [8, 16], "ops": ["ir_k3_e2", "er_k3_e2"], "skippable": True},
    {"name": "b2", "layers": 2, "stride": 2, "widths": [16, 24], "ops": ["ir_k3_e2", "tk_k3_i0.25_o0.75"],
     "skippable": True},
    {"name": "b3", "layers": 1, "stride": 2, "widths": [16, 24], "ops": ["ir_k3_e2", "ir_k5_e2"]},
    {"name": "b4", "layers": 2, "stride": 2, "widths": [24, 32], "ops": ["ir_k3_e2", "er_k3_e2"], "skippable": True},
]}
HEAD = SSDLiteHead(num_classes=3, extra_depths=(32, 16))


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny networks on a shared 2-core machine: one thread avoids contention (10x faster here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space():
    return BlockSpace.from_description(TINY)


def _supernet(space, sharing="none", seed=0):
    torch.manual_seed(seed)
    return Supernet(space, num_classes=3, head=HEAD, weight_sharing=sharing)


def _paths(space, count=6, seed=1):
    return [sample_path(space, step, seed) for step in range(count)]


@pytest.mark.parametrize("sharing", WEIGHT_SHARING)
def test_every_sampled_path_trains_only_its_own_weights(space, sharing):
    net = _supernet(space, sharing).train()
    images = torch.randn(2, 3, 64, 64)
    trained_sets = set()
    for arch in _paths(space):
        net.zero_grad(set_to_none=True)
        net.set_active(arch)
        boxes, logits = net(images)
        (boxes.square().mean() + logits.sigmoid().mean()).backward()
        with_grad = {name for name, p in net.named_parameters() if p.grad is not None}
        on_path = {id(p) for p in net.path_parameters(arch)}
        expected = {name for name, p in net.named_parameters() if id(p) in on_path}
        assert with_grad == expected, f"{arch}: off-path {sorted(with_grad - expected)[:3]}, " \
                                      f"missing {sorted(expected - with_grad)[:3]}"
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        if sharing == "none":  # a path is exactly a stand-alone detector's parameters
            standalone = count_parameters(SSDLite(arch, num_classes=3, head=HEAD))
            assert sum(p.numel() for p in net.path_parameters(arch)) == standalone
        trained_sets.add(frozenset(with_grad))
    assert len(trained_sets) > 1, "the sampled paths should not all train the same weights"


@pytest.mark.parametrize("sharing", WEIGHT_SHARING)
def test_extracted_ssdlite_equals_the_active_path(space, sharing):
    net = _supernet(space, sharing)
    images = torch.randn(2, 3, 64, 96)  # non-square: TF-SAME padding and anchor grids differ per axis
    for arch in _paths(space, 4, seed=2):
        net.set_active(arch)
        child = net.extract()
        assert isinstance(child, SSDLite) and child.arch == arch
        assert set(net.child_state_dict()) == set(SSDLite(arch, num_classes=3, head=HEAD).state_dict())
        for train in (False, True):
            net.train(train)
            child.train(train)
            with torch.no_grad():
                for ours, theirs in zip(net(images), child(images)):
                    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_module_names_trace_back_to_the_standalone_detector(space):
    net = _supernet(space)
    arch = _paths(space, 1)[0]
    names = set(net.state_dict())
    config = arch.trace(1)[1]  # block 1, layer 0: meets every stem width (8)
    assert f"backbone.blocks.1.0.{config.layer.token()}__in8.expand.conv.weight" in names
    c5 = arch.feature("C5").channels
    assert f"extras.0.in{c5}.reduce.conv.weight" in names  # per C5 width
    assert "extras.1.reduce.conv.weight" in names  # shared by every path


def test_anchors_are_those_of_every_member(space):
    net = _supernet(space)
    for arch in _paths(space, 3):
        assert (net.anchors((64, 96)) == SSDLite(arch, num_classes=3, head=HEAD).anchors((64, 96))).all()


def test_path_sampling_is_deterministic_per_seed_and_step_and_uniform(space):
    assert _paths(space, 20, seed=7) == _paths(space, 20, seed=7)
    assert _paths(space, 20, seed=7) != _paths(space, 20, seed=8)
    assert len(set(_paths(space, 20))) > 10
    counts = collections.Counter()
    draws = 600
    for arch in _paths(space, draws, seed=3):
        for slot, gene in zip(space.slots, space.encode(arch)):
            counts[slot.name, gene] += 1
    for slot in space.slots:
        for gene in range(len(slot)):
            expected = draws / len(slot)
            assert 0.75 * expected < counts[slot.name, gene] < 1.25 * expected, (slot.name, gene)


def test_activated_restores_the_previous_path_and_no_path_is_an_error(space):
    net = _supernet(space)
    with pytest.raises(RuntimeError, match="no active path"):
        net(torch.randn(1, 3, 64, 64))
    first, second = _paths(space, 2, seed=4)
    net.set_active(first)
    with net.activated(second):
        assert net.arch == second
    assert net.arch == first


def test_size_counts_equal_the_built_supernet_and_sharing_shrinks_it(space):
    counts = []
    for sharing in WEIGHT_SHARING:
        built = sum(p.numel() for p in _supernet(space, sharing).parameters())
        size = supernet_size(space, num_classes=3, head=HEAD, weight_sharing=sharing)
        assert size["parameters"] == built and size["weight_bytes"] == 4 * built
        counts.append(built)
    assert counts[0] > counts[1] > counts[2]


def test_an_architecture_outside_the_space_is_refused_by_name(space):
    net = _supernet(space)
    with pytest.raises(NotInSpaceError, match="tiny.*5 blocks"):
        net.set_active(get_reference("mobiledet-edgetpu").arch)
    wide = space.decode((0,) * len(space.slots)).encode().rsplit("/", 1)[0] + "/ir_k3_s2_e2_c40,skip"
    with pytest.raises(NotInSpaceError, match="width 40 is not one of"):
        net.set_active(wide)


def test_weights_of_another_space_are_refused(space):
    other = BlockSpace.from_description({**TINY, "blocks": TINY["blocks"][:-1] + [
        {**TINY["blocks"][-1], "ops": ["ir_k3_e2", "ir_k5_e2"]}]})
    with pytest.raises(ValueError, match="another search space than 'tiny'"):
        _supernet(space).load_state_dict(Supernet(other, num_classes=3, head=HEAD).state_dict())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"weight_sharing": "all"}, ValueError, "weight_sharing must be one of"),
    ({"head": SSDLiteHead(num_classes=3, from_features=("C6",))}, ValueError, r"reads \['C6'\]"),
])
def test_bad_settings_are_named(space, kwargs, error, message):
    with pytest.raises(error, match=message):
        Supernet(space, num_classes=3, **kwargs)


def test_a_supernet_needs_a_block_space():
    from tdbnas.spaces import SearchSpace

    class NotBlocks(SearchSpace):  # a space without blocks of layer slots
        slots = ()

        def decode(self, genome):
            raise NotImplementedError

        def encode(self, arch):
            raise NotImplementedError

        def layer_configs(self, resolution, width_multiplier=1.0):
            return frozenset()

    with pytest.raises(TypeError, match="needs a BlockSpace"):
        Supernet(NotBlocks(), num_classes=3)
