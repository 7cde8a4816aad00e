"""Guiding acquisition: where the microscope should take a real STED image.

Synthetic STED is cheap and harmless; real STED costs photobleaching and time. From N
dropout generations, :func:`propose_regions` scores blocks of the field by how much the
generations disagree (synthetic STED variability and segmentation disagreement), calls
each block's structure present or absent with a confidence, and proposes the most
informative blocks within a budget. Regions go to and from CSV/JSON with physical
coordinates for a microscope script; a live-preset model then predicts the rest of the
field from the real STED acquired in them (:func:`predict_with_regions`).
"""

from __future__ import annotations

from .files import read_regions, regions_to_csv, regions_to_json, write_regions
from .live import check_live, live_input, predict_with_regions, region_sted
from .regions import Region, RegionSet, boxes_from_shapes, rectangles
from .scoring import (
    Generations,
    RegionProposal,
    block_means,
    block_pixels,
    propose_regions,
    rank_regions,
    sample_generations,
    select_regions,
)

__all__ = [
    "Generations",
    "Region",
    "RegionProposal",
    "RegionSet",
    "block_means",
    "block_pixels",
    "boxes_from_shapes",
    "check_live",
    "live_input",
    "predict_with_regions",
    "propose_regions",
    "rank_regions",
    "read_regions",
    "rectangles",
    "region_sted",
    "regions_to_csv",
    "regions_to_json",
    "sample_generations",
    "select_regions",
    "write_regions",
]
