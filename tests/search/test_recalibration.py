"""Per-path BN recalibration: exact statistics of the path's activations, per path, nothing else touched."""

import copy

import pytest

torch = pytest.importorskip("torch")

from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from tdbnas.search.recalibration import (  # noqa: E402
    RecalibrationSettings,
    path_batchnorms,
    recalibrate_bn,
    recalibration_indices,
)
from tdbnas.search.supernet import Supernet, sample_path  # noqa: E402
from tdbnas.spaces import BlockSpace, SSDLiteHead  # noqa: E402

pytestmark = pytest.mark.torch

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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space():
    return BlockSpace.from_description(TINY)


@pytest.fixture(scope="module")
def images():
    """(image, target) pairs, as a detection dataset yields them (targets are not used)."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(3, 64, 64, generator=generator) * 2 - 1, {"image_id": i}) for i in range(11)]


def _supernet(space, sharing="none"):
    torch.manual_seed(0)
    net = Supernet(space, num_classes=3, head=HEAD, weight_sharing=sharing)
    # Make the trained statistics something other than the initial (0, 1), so a reset is visible.
    for name, buffer in net.named_buffers():
        if name.endswith("running_mean"):
            buffer.uniform_(-1, 1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2)
    return net.eval()


def _batchnorm_inputs(net, images, indices, batch_size):
    """A direct computation: every path BN's inputs, batch by batch, with the path in train mode."""
    probe = copy.deepcopy(net).train()
    norms = path_batchnorms(probe)
    captured = {index: [] for index in range(len(norms))}
    hooks = [bn.register_forward_pre_hook(lambda m, args, i=i: captured[i].append(args[0].double()))
             for i, bn in enumerate(norms)]
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            probe(torch.stack([images[i][0] for i in indices[start:start + batch_size]]))
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize("sharing", ["none", "width"])
def test_statistics_are_the_exact_average_over_the_images(space, images, sharing):
    net = _supernet(space, sharing)
    net.set_active(sample_path(space, 0, seed=1))
    settings = RecalibrationSettings(images=10, batch_size=4, seed=3)  # batches of 4, 4 and 2 images
    indices = recalibration_indices(len(images), 10, 3)
    expected = _batchnorm_inputs(net, images, indices, 4)
    report = recalibrate_bn(net, images, settings)
    assert (report["images"], report["batches"]) == (10, 3)
    norms = path_batchnorms(net)
    assert report["batchnorms"] == len(norms) > 10
    for index, bn in enumerate(norms):
        batches = expected[index]
        sizes = torch.tensor([x.shape[0] for x in batches], dtype=torch.float64)
        # Every activation of every image counts once in the mean (equal pixels per image) ...
        mean = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in batches], dim=1).mean(dim=1)
        # ... and the variance is the per-batch unbiased variance (what train-mode BN normalises
        # with), averaged over batches weighted by their images.
        variances = torch.stack([x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1) for x in batches])
        variance = (variances * sizes[:, None]).sum(dim=0) / sizes.sum()
        running_mean, running_var = _statistics(net, bn)
        torch.testing.assert_close(running_mean.double(), mean, rtol=1e-5, atol=1e-6, msg=f"BN {index} mean")
        torch.testing.assert_close(running_var.double(), variance, rtol=1e-5, atol=1e-6, msg=f"BN {index} var")


def test_one_batch_of_all_images_gives_their_mean_and_unbiased_variance(space, images):
    net = _supernet(space)
    net.set_active(sample_path(space, 0, seed=2))
    indices = recalibration_indices(len(images), 500, 0)
    expected = _batchnorm_inputs(net, images, indices, len(indices))
    report = recalibrate_bn(net, images, RecalibrationSettings(images=500, batch_size=64))
    assert (report["images"], report["batches"]) == (len(images), 1)  # asked for 500, the data holds 11
    for index, bn in enumerate(path_batchnorms(net)):
        x = expected[index][0]
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        torch.testing.assert_close(bn.running_mean.double(), flat.mean(dim=1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), flat.var(dim=1), rtol=1e-5, atol=1e-6)


def test_statistics_differ_per_path_and_repeat_exactly(space, images):
    net = _supernet(space)
    first, second = sample_path(space, 0, seed=4), sample_path(space, 1, seed=4)
    assert first != second
    shared = "box_heads.3.depthwise.bn"  # on every path; its input depends on the path
    settings = RecalibrationSettings(images=8, batch_size=4)

    def statistics(arch):
        with net.activated(arch):
            recalibrate_bn(net, images, settings)
        module = net.get_submodule(shared)
        return module.running_mean.clone(), module.running_var.clone()

    a, b, again = statistics(first), statistics(second), statistics(first)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1])


def test_only_the_path_is_touched_and_settings_are_restored(space, images):
    net = _supernet(space)
    net.set_active(sample_path(space, 0, seed=5))
    net.set_bn_momentum(0.03)
    before = {name: b.clone() for name, b in net.named_buffers()}
    on_path = {id(m) for m in path_batchnorms(net)}
    off_path = [name for name, m in net.named_modules() if isinstance(m, _BatchNorm) and id(m) not in on_path]
    assert off_path
    recalibrate_bn(net, images, RecalibrationSettings(images=6, batch_size=3))
    assert not net.training
    assert all(m.momentum == 0.03 for m in net.modules() if isinstance(m, _BatchNorm))
    after = dict(net.named_buffers())
    for name in off_path:
        for stat in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{name}.{stat}"], before[f"{name}.{stat}"]), f"{name} was touched"
    changed = [name for name, m in net.named_modules() if id(m) in on_path
               and not torch.equal(after[f"{name}.running_mean"], before[f"{name}.running_mean"])]
    assert len(changed) == len(on_path)


def test_a_plain_detector_recalibrates_all_its_batch_norms(space, images):
    child = _supernet(space).extract(sample_path(space, 0))
    report = recalibrate_bn(child, images, RecalibrationSettings(images=4, batch_size=4))
    assert report["batchnorms"] == sum(isinstance(m, _BatchNorm) for m in child.modules())


@pytest.mark.parametrize("kwargs", [{"images": 0}, {"batch_size": 0}, {"images": 2.5}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer"):
        RecalibrationSettings(**kwargs)


def _statistics(net, bn):
    """Running mean and variance of `bn`: its own buffers, or for a shared-weight template the slice
    of the shared buffers it reads (found by running it once on the active path)."""
    if bn.running_mean.device.type != "meta":
        return bn.running_mean.clone(), bn.running_var.clone()
    seen = {}
    hook = bn.register_forward_pre_hook(lambda m, args: seen.update(mean=m.running_mean.clone(),
                                                                     var=m.running_var.clone()))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 64, 64))
    hook.remove()
    return seen["mean"], seen["var"]
