"""The drawing helper: exact pixels of outlines, labels, colours, thumbnails."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.images.draw import CLASS_CYCLE, COLORS, OKABE_ITO, class_color, draw_boxes, thumbnail


def _black(h: int = 100, w: int = 100) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_no_boxes_returns_an_equal_copy():
    img = _black()
    img[3, 4] = (1, 2, 3)
    out = draw_boxes(img, np.zeros((0, 4)))
    assert out is not img
    assert np.array_equal(out, img)
    assert np.array_equal(draw_boxes(img, []), img)


def test_outline_is_drawn_inside_the_box_with_exact_pixels():
    img = _black()
    out = draw_boxes(img, [[0.1, 0.2, 0.5, 0.6]], colors=(255, 0, 0), width=2)
    red = np.all(out == (255, 0, 0), axis=2)
    expected = np.zeros((100, 100), bool)
    expected[20:60, 10:50] = True
    expected[22:58, 12:48] = False          # hollow inside a 2-pixel frame
    assert np.array_equal(red, expected)
    assert not img.any()                    # input untouched


def test_default_colour_is_ground_truth_colour():
    out = draw_boxes(_black(), [[0.0, 0.0, 1.0, 1.0]], width=1)
    assert tuple(out[0, 0]) == COLORS["gt"]
    assert tuple(out[99, 99]) == COLORS["gt"]
    assert tuple(out[50, 50]) == (0, 0, 0)


def test_boxes_outside_the_image_are_clipped_and_empty_ones_skipped():
    out = draw_boxes(_black(), [[-0.5, -0.5, 0.1, 0.1], [0.5, 0.5, 0.5, 0.9]], colors=(9, 9, 9), width=1)
    painted = np.all(out == (9, 9, 9), axis=2)
    assert painted[0, :10].all() and painted[:10, 0].all() and painted[9, :10].all()
    assert painted.sum() == 36                  # 10×10 frame; the zero-width box draws nothing


def test_one_colour_per_box():
    colors = [OKABE_ITO["orange"], OKABE_ITO["blue"]]
    out = draw_boxes(_black(), [[0, 0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]], colors=colors, width=1)
    assert tuple(out[0, 0]) == colors[0] and tuple(out[50, 50]) == colors[1]
    with pytest.raises(ValueError, match="2 colours for 3 boxes"):
        draw_boxes(_black(), [[0, 0, 0.1, 0.1]] * 3, colors=colors)


def test_label_is_drawn_above_the_box_on_its_colour():
    box = [[0.2, 0.5, 0.8, 0.9]]
    plain = draw_boxes(_black(), box, colors=(0, 158, 115), width=1)
    labelled = draw_boxes(_black(), box, labels=["boat 0.93"], colors=(0, 158, 115), width=1)
    changed = np.any(labelled != plain, axis=2)
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.size and rows.max() < 50        # the label sits above the box top (y = 50)
    above = labelled[rows.min():50, 20:80]
    assert np.all(above == (0, 158, 115), axis=2).sum() > 50   # background in the box colour
    assert (above.sum(axis=2) < 60).sum() > 5    # black ink: more contrast than white on green


def test_label_at_the_top_edge_goes_inside_the_box():
    labelled = draw_boxes(_black(), [[0.1, 0.0, 0.9, 0.5]], labels=["x"], colors=(240, 228, 66), width=1)
    plain = draw_boxes(_black(), [[0.1, 0.0, 0.9, 0.5]], colors=(240, 228, 66), width=1)
    rows = np.nonzero(np.any(labelled != plain, axis=2).any(axis=1))[0]
    assert rows.min() >= 0 and rows.max() < 20              # inside the box, at its top
    assert np.all(labelled[1:12, 11:20] == (240, 228, 66), axis=2).sum() > 30


def test_empty_label_draws_only_the_outline():
    box = [[0.2, 0.5, 0.8, 0.9]]
    assert np.array_equal(draw_boxes(_black(), box, labels=[""]), draw_boxes(_black(), box))


def test_palette_is_okabe_ito_and_classes_cycle():
    assert set(COLORS) == {"gt", "tp", "fp", "fn"}
    assert len(set(COLORS.values())) == 4 and set(COLORS.values()) <= set(OKABE_ITO.values())
    assert class_color(0) == CLASS_CYCLE[0] and class_color(len(CLASS_CYCLE)) == CLASS_CYCLE[0]
    assert (0, 0, 0) not in CLASS_CYCLE


def test_thumbnail_scales_the_longest_side_and_never_enlarges():
    img = np.full((100, 200, 3), 7, np.uint8)
    small = thumbnail(img, 50)
    assert small.shape == (25, 50, 3) and (small == 7).all()
    same = thumbnail(img, 500)
    assert same.shape == img.shape and same is not img


def test_ink_is_white_on_dark_colours():
    out = draw_boxes(_black(), [[0.2, 0.5, 0.8, 0.9]], labels=["boat"], colors=(0, 114, 178), width=1)
    assert (out[:50].min(axis=2) > 200).sum() > 5


def test_label_count_must_match_and_nan_boxes_are_skipped():
    with pytest.raises(ValueError, match="1 labels for 2 boxes"):
        draw_boxes(_black(), [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], labels=["a"])
    out = draw_boxes(_black(), [[np.nan, 0, 0.5, 0.5]], labels=["a"])
    assert not out.any()


def _label_pixels(boxes, labels, colors):
    """Pixels a set of labels changes (outlines drawn alike on both sides)."""
    plain = draw_boxes(_black(200, 200), boxes, colors=colors, width=1)
    return np.any(draw_boxes(_black(200, 200), boxes, labels=labels, colors=colors, width=1) != plain, axis=2)


def test_a_small_box_at_the_top_edge_keeps_its_label_outside():
    box = [[0.40, 0.0, 0.46, 0.05]]                    # a 12×10 px boat touching the top edge
    changed = _label_pixels(box, ["FP boat 0.42"], (213, 94, 0))
    assert changed.any()
    assert not changed[0:10, 40:92].any()              # nothing drawn over the boat itself
    assert np.nonzero(changed.any(axis=1))[0].min() >= 10   # the label went below it


def test_labels_of_neighbouring_boxes_never_overlap_each_other_or_cover_a_small_box():
    import cv2

    from pipeline.images.draw import FONT, FONT_SCALE, FONT_THICKNESS, LABEL_PAD

    # Three small boats in a cluster (200 px image): every label must stay whole and off every box.
    boxes = [[0.30, 0.50, 0.36, 0.54], [0.33, 0.44, 0.40, 0.48], [0.31, 0.51, 0.37, 0.555]]
    labels = ["FP 0.42 IoU 0.31", "FN boat", "TP 0.88"]
    colors = [(213, 94, 0), (240, 228, 66), (0, 158, 115)]
    out = draw_boxes(_black(200, 200), boxes, labels=labels, colors=colors, width=1)
    outlines = draw_boxes(_black(200, 200), boxes, colors=colors, width=1).any(axis=2)
    for text, color in zip(labels, colors):
        (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
        background = np.all(out == color, axis=2) & ~outlines
        assert background.sum() > 0.6 * (tw + 2 * LABEL_PAD) * (th + base + 2 * LABEL_PAD), text  # not hidden
    for x0, y0, x1, y1 in (np.array(boxes) * 200).round().astype(int):
        inside = out[y0 + 1:y1 - 1, x0 + 1:x1 - 1].any(axis=2) & ~outlines[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
        assert not inside.any(), "a label covers a small box"
