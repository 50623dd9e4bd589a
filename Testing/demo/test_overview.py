"""The demo's overview PNG (issue #19): an honest caption, slice positions in patient mm, letters beside the images.

No model runs here: the figure is drawn from the real demo image with its reference mask standing in for the
prediction, so the geometry (2 x 2 x 3 mm coronal slices, axes permuted and flipped against RAS) is the real one.
"""

import itertools
import os

import numpy as np
import pytest
import SimpleITK as sitk

from UNetSigmoidSegLib import demo
from UNetSigmoidSegLib.engine.files.volume import read_volume

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.path.join(REPO, "Resources", "Data", "T1_head.nii.gz")
REFERENCE = os.path.join(REPO, "Resources", "Data", "T1_head_brainmask.nii.gz")


def test_caption_says_the_dice_is_on_the_training_image_and_research_use_only():
    caption = demo.overview_caption(0.97361, 1510.8, 1541.7)
    lines = caption.split("\n")
    assert (
        lines[0] == "BrainT1UNet demo: Dice 0.974 against the reference brain mask; brain 1511 mL (reference 1542 mL)"
    )
    assert "the demo model's own training image" in caption
    assert "not a measure of accuracy" in caption
    assert "Research use — not for clinical use." in caption
    assert "radiological view (R on the left)" in caption and "RAS" in caption
    assert len(lines) == 3  # that each line fits on the picture: test_no_text_..._leaves_the_picture


@pytest.mark.parametrize(
    ("axis", "mm", "text"),
    [
        (0, 20.0, "R 20.0 mm"),
        (0, -20.04, "L 20.0 mm"),
        (1, 3.0, "A 3.0 mm"),
        (1, -3.0, "P 3.0 mm"),
        (2, 12.5, "S 12.5 mm"),
        (2, -124.0, "I 124.0 mm"),
        (2, -0.04, "S 0.0 mm"),  # rounds to zero: no "I 0.0" and no "-0.0"
    ],
)
def test_ras_label_writes_the_side_letter_and_millimetres_like_slicers_data_probe(axis, mm, text):
    assert demo.ras_label(axis, mm) == text


def test_slice_titles_are_the_demo_image_voxel_centre_in_patient_mm():
    volume = read_volume(IMAGE)
    voxel = np.array([61, 62, 28])
    # independent of the product's affine: SimpleITK's index -> LPS point, then LPS -> RAS
    lps = sitk.ReadImage(IMAGE).TransformIndexToPhysicalPoint([int(v) for v in voxel])
    ras = np.array([-lps[0], -lps[1], lps[2]])
    assert np.allclose(demo.ras_mm(volume.affine, voxel), ras)
    expected = [f"axial at {demo.ras_label(2, ras[2])}", f"coronal at {demo.ras_label(1, ras[1])}"]
    expected.append(f"sagittal at {demo.ras_label(0, ras[0])}")
    assert demo.slice_titles(demo.ras_mm(volume.affine, voxel)) == expected
    # this file: i runs to the left 2 mm, j up 2 mm, k forwards 3 mm from (0, -254, 0)
    titles = demo.slice_titles(demo.ras_mm(volume.affine, voxel))
    assert titles == ["axial at S 124.0 mm", "coronal at P 170.0 mm", "sagittal at L 122.0 mm"]


def test_display_index_finds_the_voxel_in_the_ras_view():
    arr = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = 0.0
            for voxel_axis, world in enumerate(perm):
                affine[world, voxel_axis] = signs[voxel_axis] * (1.0 + voxel_axis)
            view = demo.ras_view([arr], affine)[0][0]
            for voxel in ([0, 0, 0], [3, 1, 5], [2, 4, 0]):
                at = tuple(demo.display_index(np.array(voxel), arr.shape, affine))
                assert view[at] == arr[tuple(voxel)], (perm, signs, voxel)


def test_edge_letters_follow_the_screen_axis():
    assert demo.edge_letters(0, True) == ("R", "L")  # radiological: patient's right on the left
    assert demo.edge_letters(1, False) == ("P", "A")
    assert demo.edge_letters(2, False) == ("I", "S")


@pytest.fixture(scope="module")
def drawn_overview():
    """The overview figure of the real demo image, drawn: (figure, renderer)."""
    pytest.importorskip("matplotlib")
    volume = read_volume(IMAGE)
    ref = read_volume(REFERENCE).array[0] > 0
    fig = demo.overview_figure(
        volume.array[0], ref, ref, ref.astype(float), volume.affine, 0.5, demo.overview_caption(1.0, 1541.7, 1541.7)
    )
    fig.canvas.draw()
    return fig, fig.canvas.get_renderer()


def test_overview_shows_the_caption_and_the_positions_in_mm(drawn_overview):
    fig, _ = drawn_overview
    assert fig._suptitle.get_text() == demo.overview_caption(1.0, 1541.7, 1541.7)
    ref = read_volume(REFERENCE)
    centre = np.rint(np.argwhere(ref.array[0] > 0).mean(axis=0))
    assert [ax.get_title() for ax in fig.axes[:3]] == demo.slice_titles(demo.ras_mm(ref.affine, centre))
    assert all(" mm" in ax.get_title() and "slice" not in ax.get_title() for ax in fig.axes[:3])


def test_orientation_letters_sit_beside_their_image_not_on_it(drawn_overview):
    fig, renderer = drawn_overview
    for ax, letters in zip(fig.axes[:3], [("R", "L"), ("R", "L"), ("P", "A")]):
        image = ax.images[0].get_window_extent(renderer)
        texts = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
        assert set(texts) == set(letters), texts
        left = texts[letters[0]]
        right = texts[letters[1]]
        assert left.x1 < image.x0 and right.x0 > image.x1, (ax.get_title(), left, right, image)
        assert image.y0 < (left.y0 + left.y1) / 2 < image.y1  # level with the image's middle


def _labels(fig):
    """Every text the overview draws: caption, panel titles, orientation letters, axis labels, legend,
    and the tick labels of ticks inside their axis' view (matplotlib keeps, but does not draw, the others)."""
    texts = [fig._suptitle]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label] + list(ax.texts)
        legend = ax.get_legend()
        texts += list(legend.get_texts()) if legend else []
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def test_no_text_of_the_overview_covers_an_image_or_leaves_the_picture(drawn_overview):
    fig, renderer = drawn_overview
    images = [im.get_window_extent(renderer) for ax in fig.axes for im in ax.images]
    assert len(images) == 6  # grey image + overlay in each of the three panels
    page = fig.bbox
    texts = _labels(fig)
    assert len(texts) > 20
    for text in texts:
        box = text.get_window_extent(renderer)
        assert not any(box.overlaps(im) for im in images), text.get_text()
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text.get_text()
