"""Guiding acquisition: ranking, budgets, region files, live-mode input (core, no Qt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_tagan.core.errors import InputError
from napari_tagan.core.guide import (
    Generations,
    Region,
    RegionSet,
    block_means,
    boxes_from_shapes,
    live_input,
    predict_with_regions,
    propose_regions,
    rank_regions,
    read_regions,
    rectangles,
    sample_generations,
    select_regions,
    write_regions,
)
from napari_tagan.core.prediction import predict

from conftest import tiny_model

N = 8


def _summary(variability=None, masks=None, shape=(32, 48)):
    var = np.full(shape, 1.0, np.float32) if variability is None else variability
    return Generations(
        np.zeros(shape, np.float32), var, masks, ("rings",) if masks is not None else ()
    )


def test_block_means_handle_partial_edge_blocks():
    a = np.arange(5 * 7, dtype=np.float64).reshape(5, 7)
    got = block_means(a, (2, 3))
    assert got.shape == (3, 3)
    assert got[0, 0] == a[:2, :3].mean() and got[2, 2] == a[4:, 6:].mean()
    assert got[1, 2] == a[2:4, 6:].mean()


def test_the_most_variable_block_ranks_first():
    var = np.full((32, 48), 0.1, np.float32)
    var[16:24, 8:16] = 5.0  # the ambiguous block: row 2, column 1 of 8-pixel blocks
    var[0:8, 40:48] = 2.0  # second
    ranked = rank_regions(_summary(var), (8, 8))
    assert len(ranked) == 4 * 6
    assert (ranked[0].y0, ranked[0].x0, ranked[0].y1, ranked[0].x1) == (16, 8, 24, 16)
    assert (ranked[1].y0, ranked[1].x0) == (0, 40)
    assert ranked[0].score == 1.0 and ranked[0].variability == pytest.approx(5.0)
    assert ranked[1].score == pytest.approx(2.0 / 5.0)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert ranked[2].y0 == 0 and ranked[2].x0 == 0  # ties: reading order


def test_segmentation_disagreement_ranks_a_flat_variability_block_first():
    masks = np.zeros((N, 1, 32, 48), bool)
    masks[:, :, 0:8, 0:8] = True  # rings in every generation: present, sure
    masks[: N // 2, :, 24:32, 40:48] = True  # rings in half of them: ambiguous
    ranked = rank_regions(_summary(masks=masks), (8, 8), seg_weight=0.5)
    top = ranked[0]
    assert (top.y0, top.x0) == (24, 40)
    assert top.disagreement == pytest.approx(0.5) and top.confidence == (0.5,)
    sure = next(r for r in ranked if (r.y0, r.x0) == (0, 0))
    assert sure.present == (True,) and sure.confidence == (1.0,) and sure.disagreement == 0
    empty = next(r for r in ranked if (r.y0, r.x0) == (8, 8))
    assert empty.present == (False,) and empty.confidence == (1.0,)
    # Asking only for uncertain calls keeps the ambiguous block alone.
    chosen = select_regions(ranked, 5, 32 * 48, uncertain_below=0.9)
    assert [(r.y0, r.x0) for r in chosen] == [(24, 40)]


def test_presence_needs_the_minimum_area():
    masks = np.zeros((N, 1, 16, 16), bool)
    masks[:, :, 0, 0] = True  # one pixel of 64 in the block: 1.6 %
    ranked = rank_regions(_summary(masks=masks, shape=(16, 16)), (8, 8), min_area=0.02)
    first = next(r for r in ranked if (r.y0, r.x0) == (0, 0))
    assert first.present == (False,)
    ranked = rank_regions(_summary(masks=masks, shape=(16, 16)), (8, 8), min_area=0.01)
    assert next(r for r in ranked if (r.y0, r.x0) == (0, 0)).present == (True,)


@pytest.mark.parametrize(
    ("budget", "expected"), [(3, 3), (100, 24), (0.25, 6), (0.01, 1), (1.0, 24)]
)
def test_budget_in_regions_or_fraction_of_the_field(budget, expected):
    ranked = rank_regions(_summary(), (8, 8))
    assert len(select_regions(ranked, budget, 32 * 48)) == expected


@pytest.mark.parametrize("budget", [0, -1, 1.5, 0.0, float("nan"), True, "3"])
def test_bad_budgets_are_refused(budget):
    ranked = rank_regions(_summary(), (8, 8))
    with pytest.raises(InputError, match="budget"):
        select_regions(ranked, budget, 32 * 48)


def _regions(calls=True):
    names = ("rings", "fibers")
    regs = (
        Region(0, 0, 8, 8, 0.9, 1.5, 0.25, (True, False), (0.75, 1.0)),
        Region(8, 16, 24, 32, 0.5, 0.7, 0.0, (False, False), (1.0, 0.875)),
    )
    if not calls:
        regs = tuple(Region(r.y0, r.x0, r.y1, r.x1, r.score) for r in regs)
    return RegionSet(regs, (32, 40), (0.02, 0.025), (10.0, -5.0), names, {"block_um": 0.16})


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_region_files_round_trip_with_physical_coordinates(tmp_path, suffix):
    regions = _regions()
    path = write_regions(regions, tmp_path / f"regions{suffix}")
    back = read_regions(path)
    assert back.regions == regions.regions
    assert back.pixel_size_um == (0.02, 0.025) and back.origin_um == (10.0, -5.0)
    assert back.image_shape == (32, 40) and back.class_names == ("rings", "fibers")
    assert back.physical(back.regions[1]) == pytest.approx((10.16, -4.6, 10.48, -4.2))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_a_script_may_give_physical_coordinates_only(tmp_path):
    text = (tmp_path / "r.csv").write_text
    header = "y0_um,x0_um,y1_um,x1_um,pixel_size_y_um,pixel_size_x_um,origin_y_um,"
    header += "origin_x_um,image_height_px,image_width_px\n"
    text(header + "10.16,-4.6,10.48,-4.2,0.02,0.025,10,-5,32,40\n")
    back = read_regions(tmp_path / "r.csv")
    assert [(r.y0, r.x0, r.y1, r.x1) for r in back.regions] == [(8, 16, 24, 32)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no regions"),
        ("rank,y0_px\n1,2\n", "missing column"),
        ('{"format": "other"}', "not a regions file"),
        ("{", "not valid JSON"),
        ("REPLACE:y0_px=abc", "not a number"),
        ("REPLACE:y1_px=99", "outside the 32×40 image"),
        ("REPLACE:pixel_size_um=[0, 1]", "positive"),
        ("REPLACE:regions=5", "list of objects"),
    ],
)
def test_bad_region_files_give_one_line(tmp_path, content, message):
    suffix = ".json" if content.startswith(("{", "REPLACE")) else ".csv"
    if content.startswith("REPLACE:"):
        key, value = content[len("REPLACE:") :].split("=")
        doc = json.loads(write_regions(_regions(), tmp_path / "good.json").read_text())
        if key in doc:
            doc[key] = json.loads(value)
        else:
            doc["regions"][0][key] = value if not value.isdigit() else int(value)
        content = json.dumps(doc)
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_regions(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_wrong_suffix_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"\.csv or \.json"):
        write_regions(_regions(), tmp_path / "regions.txt")


def test_rectangles_and_shapes_round_trip():
    regions = _regions().regions
    boxes = boxes_from_shapes(rectangles(regions), (32, 40))
    assert [(b.y0, b.x0, b.y1, b.x1) for b in boxes] == [(r.y0, r.x0, r.y1, r.x1) for r in regions]
    clipped = boxes_from_shapes([np.array([[-10.0, -10.0], [5.2, 50.0]])], (32, 40))
    assert [(b.y0, b.x0, b.y1, b.x1) for b in clipped] == [(0, 0, 6, 40)]
    assert boxes_from_shapes([np.array([[-10.0, -10.0], [-5.0, -5.0]])], (32, 40)) == []


def test_propose_regions_end_to_end(confocal):
    model = tiny_model("axons")
    proposal = propose_regions(
        model, confocal, budget=3, block_um=0.16, pixel_size_um=0.02, generations=3, device="cpu"
    )
    summary = proposal.summary
    assert proposal.block_px == (8, 8) and summary.masks.shape == (3, 1, *confocal.shape)
    gens = [
        predict(model, confocal, mode="mc", generations=1, seed=s, device="cpu") for s in range(3)
    ]
    stack = np.stack([g.synthetic_sted for g in gens])
    np.testing.assert_allclose(summary.variability, stack.std(0), rtol=1e-3, atol=1e-3)
    assert summary.variability.max() > 0  # dropout makes the generations differ
    np.testing.assert_array_equal(summary.masks, np.stack([g.segmentation >= 0.5 for g in gens]))
    chosen = proposal.regions.regions
    assert len(chosen) == 3 and chosen == proposal.ranked[:3]
    assert len(proposal.ranked) == 6 * 5  # 45×38 in 8-pixel blocks, partial edges included
    assert chosen[0].score == max(r.score for r in proposal.ranked)
    assert proposal.regions.pixel_size_um == (0.02, 0.02)


def test_without_dropout_nothing_is_uncertain(confocal):
    model = tiny_model("axons", dropout=False)
    summary = sample_generations(model, confocal, generations=2, device="cpu")
    assert summary.variability.max() == 0


def test_propose_needs_a_pixel_size(confocal):
    with pytest.raises(InputError, match="pixel_size_um"):
        propose_regions(tiny_model("axons"), confocal, block_um=1.0)


def _live_case():
    model = tiny_model("live")
    rng = np.random.default_rng(1)
    confocal = rng.gamma(2.0, 20.0, size=(40, 48)).astype(np.float32)
    sted = rng.gamma(2.0, 10.0, size=(40, 48)).astype(np.float32)
    regions = RegionSet((Region(8, 8, 24, 20), Region(30, 40, 40, 48)), (40, 48), 0.02)
    return model, confocal, sted, regions


def test_live_input_is_confocal_sted_in_regions_and_decision_map():
    model, confocal, sted, regions = _live_case()
    x = live_input(model, confocal, sted, regions)
    low = model.config.normalization.out_range[0]
    mask = regions.mask()
    assert x.shape == (3, 40, 48)
    np.testing.assert_array_equal(x[2], np.where(mask, 1.0, low))
    np.testing.assert_array_equal(x[1][~mask], low)
    inside = sted[mask]  # min-max normalized over the acquired pixels only
    expected = low + (sted[mask] - inside.min()) / (inside.max() - inside.min()) * (1 - low)
    np.testing.assert_allclose(x[1][mask], expected, rtol=1e-5, atol=1e-5)


def test_live_prediction_reads_the_sted_inside_the_regions_only():
    model, confocal, sted, regions = _live_case()
    a = predict_with_regions(model, confocal, sted, regions, device="cpu")
    changed = np.where(regions.mask(), sted, 0.0)
    b = predict_with_regions(model, confocal, changed, regions, device="cpu")
    np.testing.assert_array_equal(a.synthetic_sted, b.synthetic_sted)
    c = predict_with_regions(model, confocal, sted * 0.5 + 3.0 * np.eye(40, 48), regions)
    assert not np.array_equal(a.synthetic_sted, c.synthetic_sted)


def test_live_mode_needs_a_live_model_and_matching_sizes():
    model, confocal, sted, regions = _live_case()
    with pytest.raises(InputError, match="live-preset"):
        live_input(tiny_model("axons"), confocal, sted, regions)
    with pytest.raises(InputError, match="does not match"):
        live_input(model, confocal, sted[:, :40], regions)
    with pytest.raises(InputError, match="no regions"):
        live_input(model, confocal, sted, regions.with_regions(()))
