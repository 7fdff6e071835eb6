import numpy as np
import pytest

from datasetddpm.data.procedural import BEAK, BODY, CLASS_NAMES, EYE, render, render_batch


def test_same_seed_same_bytes_different_seed_differs():
    a_img, a_mask = render(7)
    b_img, b_mask = render(7)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, _ = render(8)
    assert a_img.tobytes() != c_img.tobytes()


@pytest.mark.parametrize("size", [32, 48, 64])
def test_shapes_and_class_range(size):
    img, mask = render(3, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert mask.shape == (size, size) and mask.max() < len(CLASS_NAMES)


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="size >= 32"):
        render(0, 16)


def test_part_statistics_small_and_large_parts():
    _, masks = render_batch(range(300))
    frac = np.array([(masks == k).mean() for k in range(len(CLASS_NAMES))])
    assert len(CLASS_NAMES) >= 6
    assert frac[EYE] < 0.03 and frac[BEAK] < 0.03  # two small parts
    assert frac[BODY] > 0.08  # one large part
    # Small parts are still several pixels wide at 32 px: median visible area >= 6 px.
    for k in (EYE, BEAK):
        areas = (masks == k).sum(axis=(1, 2))
        assert np.median(areas[areas > 0]) >= 6
        assert (areas > 0).mean() > 0.8


def test_colour_alone_is_ambiguous():
    # The same colour appears as body in one image and background in another.
    imgs, masks = render_batch(range(200))
    body_colours = {tuple(imgs[i][masks[i] == BODY].mean(0).round(-1)) for i in range(200) if (masks[i] == BODY).any()}
    assert len(body_colours) > 100  # colours vary image to image
