"""The synprot preset's training tensors against the original's arithmetic, written out.

The original (``data/synprot_dataset.py``, ``SynprotDataset.__getitem__``): every plane
goes through the 8-bit grayscale conversion (clip to [0, 255], truncate), ``ToTensor``
(/255) and ``Normalize(0.5, 0.5)``; the 128 crop is taken; then each confocal and STED
channel of the *crop* is min-max stretched, ``((x - min) / (max - min) - 0.5) / 0.5``.
The graded spots masks keep their grey values: target = ``(trunc(clip(v)) / 255 - 0.5) / 0.5``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_tagan.core import predict, preset_config
from napari_tagan.core.normalization import ClippingWarning
from napari_tagan.core.training import dataset_from_folder
from napari_tagan.core.training.batches import Crop, make_batch

from conftest import tiny_model


def _graded_stack(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """conf 561, STED 561, spots 561, conf 640, STED 640, spots 640 (the loader's order)."""
    planes = []
    for _ in range(2):
        conf = rng.gamma(2.0, 40.0, (size, size))  # some pixels above 255: clipped
        sted = rng.gamma(1.5, 30.0, (size, size))
        spots = np.zeros((size, size))
        ys, xs = rng.integers(0, size, 40), rng.integers(0, size, 40)
        spots[ys, xs] = rng.integers(1, 256, 40)  # graded 1..255, most pixels 0
        planes += [conf, sted, spots]
    return np.stack(planes).astype(np.uint16)


def _original_plane(plane: np.ndarray) -> np.ndarray:
    eight_bit = np.trunc(np.clip(plane.astype(np.float64), 0, 255))  # PIL's 'L' conversion
    return (eight_bit / 255.0 - 0.5) / 0.5  # ToTensor, Normalize((0.5,), (0.5,))


def _original_crop_stretch(crop: np.ndarray) -> np.ndarray:
    return ((crop - crop.min()) / (crop.max() - crop.min()) - 0.5) / 0.5


def test_synprot_crops_and_graded_targets_match_the_original(tmp_path):
    rng = np.random.default_rng(3)
    stack = _graded_stack(rng)
    tifffile.imwrite(tmp_path / "sample.tif", stack)
    cfg = preset_config("synprot", ngf=4, nsf=4, ndf=4, crop_size=32)
    with pytest.warns(ClippingWarning):  # a few pixels above 255, as the original clips
        data = dataset_from_folder(tmp_path, cfg)
    y, x, side = 17, 40, 32
    batch = make_batch(data, [Crop(0, y, x, False, False, 0, 1)], (side, side))

    def crop(i: int) -> np.ndarray:
        return _original_plane(stack[i])[y : y + side, x : x + side]

    conf = np.stack([_original_crop_stretch(crop(0)), _original_crop_stretch(crop(3))])
    sted = np.stack([_original_crop_stretch(crop(1)), _original_crop_stretch(crop(4))])
    spots = np.stack([crop(2), crop(5)])
    np.testing.assert_allclose(batch.g_input[0], conf, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batch.sted[0], sted, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batch.targets[0], spots, atol=1e-6, rtol=0)
    # the graded masks: most "on" pixels sit below 0 in the original's units, not at +1
    on = spots > -1
    assert on.any() and np.mean(spots[on] < 0) > 0.3
    # the crop is stretched on its own: both ends reached in every channel
    assert np.allclose(batch.g_input[0].min(axis=(1, 2)), -1)
    assert np.allclose(batch.g_input[0].max(axis=(1, 2)), 1)


def test_halves_statistics_keep_tiled_prediction_exact():
    halves = {"kind": "legacy8_minmax", "regions": "halves"}
    model = tiny_model("synprot", normalization=halves).eval()
    rng = np.random.default_rng(8)
    image = rng.gamma(2.0, 30.0, (2, 70, 44)).astype(np.float32)
    image[:, :35] *= 0.3  # a dim top half: per-half statistics change its contrast 3×
    image = np.minimum(image, 255)
    whole = predict(model, image, backend="eager")
    tiled = predict(model, image, tile=24, backend="eager")
    span = np.ptp(np.trunc(image), axis=(1, 2)).max()
    assert np.abs(tiled.synthetic_sted - whole.synthetic_sted).max() <= 1e-4 * span
    stats = whole.metadata["normalization_stats"]
    assert stats["rows"] == [[0, 35], [35, 70]]
    plain = tiny_model("synprot").eval()
    assert plain.config.normalization.regions == "image"
    other = predict(plain, image, backend="eager")
    assert np.abs(other.synthetic_sted - whole.synthetic_sted)[:, :35].max() > 1e-2 * span
