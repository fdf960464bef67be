"""Golden tests for the SSD anchors (TF `ssd_anchor_generator` with the MobileDets settings)."""

import math

import numpy as np
import pytest

from tdbnas.detection.anchors import box_specs, corners, detector_anchors, layer_scales
from tdbnas.spaces import ARCHS, SSDLiteHead, get_reference

HEAD = SSDLiteHead()
EDGETPU = get_reference("mobiledet-edgetpu").arch


def test_scales_are_linear_from_0_2_to_0_95_plus_one():
    # min + (max - min) * i / 5 for i = 0..5: 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, then 1.0 (TF appends it).
    assert layer_scales(6) == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


def test_anchor_counts_at_320():
    # Maps 20x20 (3 per location, reduced lowest layer) then 10, 5, 3, 2, 1 (6 per location):
    # 400*3 + 100*6 + 25*6 + 9*6 + 4*6 + 1*6 = 1200 + 600 + 150 + 54 + 24 + 6 = 2034.
    maps = [m.hw for m in HEAD.feature_maps(EDGETPU, 320)]
    assert maps == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    counts = [h * w * n for (h, w), n in zip(maps, HEAD.anchors_per_location())]
    assert counts == [1200, 600, 150, 54, 24, 6]
    assert detector_anchors(EDGETPU, 320).shape == (2034, 4)


def test_anchor_counts_at_160():
    # Maps 10, 5, 3, 2, 1, 1: 100*3 + (25 + 9 + 4 + 1 + 1)*6 = 300 + 240 = 540.
    maps = [m.hw for m in HEAD.feature_maps(EDGETPU, 160)]
    assert maps == [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    assert detector_anchors(EDGETPU, 160).shape == (540, 4)


def test_first_anchors_of_the_first_map_by_hand():
    anchors = detector_anchors(EDGETPU, 320)
    # First location of the 20x20 map: centre ((0 + 0.5) / 20, (0 + 0.5) / 20) = (0.025, 0.025).
    # Box 0: scale 0.1, aspect 1 -> h = w = 0.1.
    # Box 1: scale 0.2, aspect 2 -> h = 0.2 / sqrt(2) = 0.141421, w = 0.2 * sqrt(2) = 0.282843.
    # Box 2: scale 0.2, aspect 1/2 -> h = 0.2 / sqrt(0.5) = 0.282843, w = 0.2 * sqrt(0.5) = 0.141421.
    expected = [[0.025, 0.025, 0.1, 0.1],
                [0.025, 0.025, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)],
                [0.025, 0.025, 0.2 * math.sqrt(2), 0.2 / math.sqrt(2)]]
    np.testing.assert_allclose(anchors[:3], expected, rtol=1e-6)
    # The next location is one column to the right: x centre (1 + 0.5) / 20 = 0.075.
    np.testing.assert_allclose(anchors[3], [0.025, 0.075, 0.1, 0.1], rtol=1e-6)
    # Row-major: location 20 is the first of the second row, y centre 0.075.
    np.testing.assert_allclose(anchors[20 * 3], [0.075, 0.025, 0.1, 0.1], rtol=1e-6)
    # As corners: the first box spans [-0.025, -0.025, 0.075, 0.075] (anchors are not clipped).
    np.testing.assert_allclose(corners(anchors[:1]), [[-0.025, -0.025, 0.075, 0.075]], atol=1e-7)


def test_second_map_has_the_interpolated_square_box_last():
    specs = box_specs(HEAD)
    # Layer 1: scale 0.35 at the five aspect ratios, then sqrt(0.35 * 0.5) = 0.418330 square.
    assert [a for _, a in specs[1]] == pytest.approx([1.0, 2.0, 0.5, 3.0, 1 / 3, 1.0])
    assert specs[1][-1][0] == pytest.approx(math.sqrt(0.35 * 0.5))
    # Last layer interpolates towards 1.0: sqrt(0.95 * 1.0).
    assert specs[5][-1][0] == pytest.approx(math.sqrt(0.95))
    anchors = detector_anchors(EDGETPU, 320)
    first_of_map1 = anchors[1200:1206]
    # Centre of the 10x10 map's first cell: 0.05; the aspect-1 box of scale 0.35 is 0.35 x 0.35.
    np.testing.assert_allclose(first_of_map1[0], [0.05, 0.05, 0.35, 0.35], rtol=1e-6)


def test_non_square_input_keeps_square_anchors_square_in_pixels():
    # 640x320 (HxW): TF scales the base size by min/H and min/W, so an aspect-1 box of scale s is
    # s * 320 pixels on both sides: normalised height s/2, width s.
    anchors = detector_anchors(EDGETPU, (640, 320))
    assert anchors[0, 2] * 640 == pytest.approx(anchors[0, 3] * 320)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_reference_gets_2034_anchors_at_320(name):
    assert detector_anchors(get_reference(name).arch, 320).shape[0] == HEAD.num_anchors(get_reference(name).arch, 320)
