"""The torch SSDLite: output layout, parameter counts, initialisation, and a whole-pipeline check."""

import pytest
import torch

from tdbnas.detection.boxes import pairwise_iou
from tdbnas.detection.loss import DetectionLoss
from tdbnas.detection.model import CLASS_BIAS_INIT, SSDLite, count_parameters
from tdbnas.detection.postprocess import Postprocessor, PostprocessSettings
from tdbnas.spaces import ARCHS, SSDLiteHead, detector_cost, get_reference

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("name", ["mobiledet-edgetpu", "mobiledet-cpu", "mobilenetv2", "detnas-300m"])
def test_outputs_and_parameters(name):
    arch = get_reference(name).arch
    model = SSDLite(arch, num_classes=90).eval()
    with torch.no_grad():
        box, cls = model(torch.randn(1, 3, 160, 160))
    assert box.shape == (1, 540, 4) and cls.shape == (1, 540, 91)
    cost = detector_cost(arch, 160)
    assert count_parameters(model) == cost.backbone.params + cost.head.params


def test_every_reference_runs_at_320_with_2034_anchors():
    for name in ARCHS.names():
        model = SSDLite(get_reference(name).arch, num_classes=3).eval()
        with torch.no_grad():
            box, cls = model(torch.randn(1, 3, 320, 320))
        assert box.shape[1] == cls.shape[1] == model.anchors(320).shape[0] == 2034


def test_class_bias_starts_at_minus_4_6_so_scores_start_near_0_01():
    model = SSDLite(get_reference("mobiledet-cpu").arch, num_classes=5).eval()
    for head in model.class_heads:
        assert torch.all(head.pointwise.bias == CLASS_BIAS_INIT)
    with torch.no_grad():
        _, cls = model(torch.zeros(1, 3, 96, 96))
    assert 0.001 < torch.sigmoid(cls).median() < 0.1


def test_outputs_follow_anchor_order_map_by_map_row_major():
    # Perturb one input pixel region on the right edge: the first-map outputs that change must be
    # those of locations in the right columns, which sit at the end of each row in anchor order.
    model = SSDLite(get_reference("mobiledet-edgetpu").arch, num_classes=2, head=SSDLiteHead(num_classes=2)).eval()
    anchors = torch.as_tensor(model.anchors(160))
    assert torch.all(anchors[:300, 1].reshape(10, 10, 3)[:, :, 0].diff(dim=1) > 0)  # x grows along a row
    assert torch.all(anchors[:300, 0].reshape(10, 10, 3)[:, :, 0].diff(dim=0) > 0)  # y grows down


@pytest.mark.slow
def test_training_on_one_image_recovers_its_boxes():
    """Anchors, matcher, coder, loss, output order and post-processing fit together: a detector
    trained on one image finds its two objects where they are, with the right classes."""
    torch.manual_seed(0)
    arch = get_reference("mobiledet-edgetpu").arch
    model = SSDLite(arch, num_classes=3, head=SSDLiteHead(num_classes=3))
    for module in model.modules():  # running statistics must settle within the few steps here
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.2
    image = torch.full((1, 3, 128, 128), -1.0)
    image[:, 0, 16:56, 20:76] = 1.0   # a red box: class 0
    image[:, 2, 72:120, 64:96] = 1.0  # a blue box: class 2
    boxes = torch.tensor([[16 / 128, 20 / 128, 56 / 128, 76 / 128], [72 / 128, 64 / 128, 120 / 128, 96 / 128]])
    labels = torch.tensor([0, 2])
    loss_fn = DetectionLoss(model.anchors(128), 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        out = loss_fn(*model(image.repeat(2, 1, 1, 1)), [boxes] * 2, [labels] * 2)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        dets = Postprocessor(model.anchors(128), settings=PostprocessSettings(score_threshold=0.3))(*model(image))[0]
    assert len(dets) >= 2
    iou = pairwise_iou(boxes, dets.boxes)  # [objects, detections]
    for index, label in enumerate(labels.tolist()):
        hits = (iou[index] > 0.5) & (dets.labels == label)
        assert hits.any(), f"object {index} not found: {dets}"
    # The most confident detection is one of the objects. (Not "the two most confident": after
    # 120 steps on one image, hard-negative mining has seen few negatives, and which background
    # box still scores high depends on the thread count's rounding; it failed CI at 1 thread.)
    assert iou[:, 0].max() > 0.5
