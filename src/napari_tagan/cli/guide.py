"""``napari-tagan guide``: propose where to acquire real STED; ``predict --regions`` uses them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "guide",
        help="propose regions where a real STED acquisition is most informative",
        description=(
            "Run N dropout generations of MODEL on one confocal IMAGE, score blocks of "
            "the field by how much the generations disagree (synthetic STED variability "
            "and segmentation disagreement), call each block's structure present or "
            "absent with a confidence, and write the best blocks within the budget to "
            "OUT (.csv or .json, pixel and µm coordinates with the pixel size and "
            "origin). With a live-preset model, `napari-tagan predict --regions OUT "
            "--sted STED.tif` then predicts the field from the STED acquired there."
        ),
    )
    p.add_argument("model", metavar="MODEL", help=".tagan bundle or checkpoint folder")
    p.add_argument("image", metavar="IMAGE", help="confocal TIFF or zarr (one 2D image)")
    p.add_argument("--out", required=True, help="regions file to write (.csv or .json)")
    p.add_argument(
        "--budget",
        default="8",
        help="number of regions (e.g. 8) or fraction of the field of view (e.g. 0.1 or 10%%)",
    )
    p.add_argument("--block-um", type=float, default=2.0, help="block side in µm (default 2)")
    p.add_argument("--generations", type=int, default=8, help="dropout generations (≥ 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first generation")
    p.add_argument(
        "--uncertain-below",
        type=float,
        help="propose only regions whose present/absent call is less confident than this "
        "(e.g. 0.9); the others are trusted to the synthetic image",
    )
    p.add_argument(
        "--pixel-size-um", type=float, help="µm per pixel (default: from the image file)"
    )
    p.add_argument(
        "--origin-um",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("Y", "X"),
        help="stage position of the image's top-left corner in µm (default 0 0)",
    )
    p.add_argument("--epoch", help="epoch of an original checkpoint folder (default: latest)")
    p.add_argument("--preset", help="preset of an original checkpoint (default: inferred)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def parse_budget(text: str) -> int | float:
    """``8`` → 8 regions; ``0.1`` or ``10%`` → that fraction of the field of view."""
    from napari_tagan.core.errors import InputError

    value = str(text).strip()
    try:
        if value.endswith("%"):
            return float(value[:-1]) / 100.0
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise InputError(
            f"--budget {text!r}: give a number of regions (8) or a fraction (0.1 or 10%)"
        ) from None


def one_image(path: str) -> tuple[Any, Any]:
    """The (Y, X) or (C, Y, X) array of a single-image file, and its source."""
    import numpy as np

    from napari_tagan.core.errors import InputError
    from napari_tagan.core.tiff import read_image

    source = read_image(Path(path))
    if len(source.data.shape) not in (2, 3):
        raise InputError(f"{path}: guide works on one 2D image, got shape {source.data.shape}")
    return np.asarray(source.data), source


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.core.checkpoints import load_model
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.guide import propose_regions, write_regions

    budget = parse_budget(args.budget)
    if Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--out {args.out}: regions are written as .csv or .json")
    image, source = one_image(args.image)
    pixel = args.pixel_size_um
    if pixel is None and source.pixel_size:
        pixel = tuple(source.pixel_size[-2:])
    if pixel is None:
        raise InputError(f"{args.image} has no pixel size: give --pixel-size-um")
    model = load_model(args.model, epoch=args.epoch, preset=args.preset)
    try:
        proposal = propose_regions(
            model,
            image,
            budget=budget,
            block_um=args.block_um,
            pixel_size_um=pixel,
            origin_um=tuple(args.origin_um),
            generations=args.generations,
            seed=args.seed,
            uncertain_below=args.uncertain_below,
            device=args.device,
        )
    except InputError as exc:
        raise InputError(f"{args.image}: {exc}") from None
    regions = proposal.regions
    write_regions(regions, args.out)
    print(
        f"wrote {len(regions.regions)} region(s) of {proposal.block_px[0]}×"
        f"{proposal.block_px[1]} px ({regions.fraction():.1%} of the field) to {args.out}"
    )
    return 0


# --- the hook of ``napari-tagan predict`` -----------------------------------------------


def add_region_arguments(p: argparse.ArgumentParser) -> None:
    """``--regions FILE --sted FILE`` on ``predict`` (live-preset models)."""
    p.add_argument(
        "--regions",
        help="live-preset models: regions file (from `napari-tagan guide`) where real STED "
        "was acquired; needs --sted",
    )
    p.add_argument(
        "--sted", help="with --regions: STED image of the same field (read inside the regions)"
    )


def region_options(args: argparse.Namespace, model: Any, sources: list[Any]) -> dict[str, Any]:
    """``sted``/``sted_mask`` for ``predict`` from ``--regions``/``--sted`` ({} without)."""
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.guide import check_live, read_regions, region_sted

    regions_path, sted_path = getattr(args, "regions", None), getattr(args, "sted", None)
    if regions_path is None and sted_path is None:
        return {}
    if regions_path is None or sted_path is None:
        raise InputError("--regions and --sted go together (regions file and STED image)")
    if len(sources) != 1:
        raise InputError(f"--regions describe one field: give one input, not {len(sources)}")
    check_live(model)
    regions = read_regions(regions_path)
    sted, _ = one_image(sted_path)
    sted_in, mask = region_sted(sted, regions, tuple(sources[0].data.shape))
    return {"sted": sted_in, "sted_mask": mask}
