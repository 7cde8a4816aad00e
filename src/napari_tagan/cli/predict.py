"""``napari-tagan predict``: enhance confocal images (synthetic STED + segmentation)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import guide


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "predict",
        help="enhance confocal images: synthetic STED, segmentation, variability",
        description=(
            "Predict a synthetic STED image and a segmentation for each input (TIFF files, "
            "folders of TIFFs, or zarr stores) with a model bundle (.tagan) or an original "
            "TA-GAN checkpoint folder. For an input X it writes OUTPUT/X_sted.tif (float32, "
            "intensity units), OUTPUT/X_seg.tif (float32 probabilities, one plane per "
            "class) and, with --generations > 1, OUTPUT/X_sted_std.tif (per-pixel std). "
            "Images of any size are predicted tile by tile (exact for ResNet models); "
            "stacks plane by plane. Pixel sizes are carried over; files are written "
            "atomically."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF file, folder or zarr")
    p.add_argument("--model", required=True, help=".tagan bundle or checkpoint folder")
    p.add_argument("--epoch", help="epoch of an original checkpoint folder (default: latest)")
    p.add_argument("--preset", help="preset of an original checkpoint (default: inferred)")
    p.add_argument("--output", required=True, help="folder for the results")
    p.add_argument("--tile", type=int, help="core tile side in pixels (default: from memory)")
    p.add_argument("--halo", type=int, help="tile context in pixels (default: measured)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32 (default, exact) or mixed precision: bf16/fp16 on a GPU, "
        "bf16 on CPUs with AMX or AVX512-BF16",
    )
    p.add_argument(
        "--generations",
        type=int,
        default=1,
        help="stochastic generations to average (> 1: mc mode and a std map)",
    )
    p.add_argument(
        "--mode",
        choices=("eval", "mc", "original"),
        help="eval (deterministic), mc (dropout generations) or original (batch "
        "statistics, whole image); default: eval, or mc with --generations > 1",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the mc/original modes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    guide.add_region_arguments(p)
    p.set_defaults(func=run)


def stack_axes(source: Any, channels: int) -> str:
    """The :func:`~napari_tagan.core.prediction.predict` layout of an input image."""
    from napari_tagan.core.errors import InputError

    shape, axes = tuple(source.data.shape), source.axes
    lead = axes[0] if axes[0] in "ZT" else "Z"
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        if channels > 1 and (axes[0] in "CS" or shape[0] == channels):
            return "CYX"
        if channels == 1 and axes[0] in "CS":
            if shape[0] == 1:
                return "CYX"
            raise InputError(
                f"{source.path}: {shape[0]} channels, but the model expects 1 (confocal)"
            )
        return f"{lead}YX" if channels == 1 else "CYX"  # CYX: predict names the mismatch
    if len(shape) == 4:
        return f"{lead}CYX"
    raise InputError(
        f"{source.path}: image of shape {shape} (axes {axes}); expected YX, CYX, "
        "ZYX/TYX or ZCYX/TCYX"
    )


def _output_axes(layout: str, *, segmentation: bool) -> str:
    if segmentation:  # classes take the place of channels
        return "ZCYX" if layout[0] in "ZT" else "CYX"
    return layout.replace("T", "Z") if layout[0] == "T" else layout


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from tqdm import tqdm

    from napari_tagan.core.checkpoints import load_model
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.prediction import predict
    from napari_tagan.core.tiff import expand_inputs, read_image, write_float32_tiff

    if args.generations < 1:
        raise InputError(f"--generations must be ≥ 1, got {args.generations}")
    mode = args.mode or ("mc" if args.generations > 1 else "eval")
    if args.tile is not None and args.tile < 1:
        raise InputError(f"--tile must be ≥ 1, got {args.tile}")
    if args.halo is not None and args.halo < 0:
        raise InputError(f"--halo must be ≥ 0, got {args.halo}")
    paths = expand_inputs(args.inputs)
    model = load_model(args.model, epoch=args.epoch, preset=args.preset)
    channels = model.config.image_channels
    # Open every input (headers only) before predicting anything.
    sources = [read_image(p) for p in paths]
    layouts = [stack_axes(s, channels) for s in sources]
    live = guide.region_options(args, model, sources)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"several inputs are named {dup[0]!r}: their outputs would collide")
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, layout in zip(sources, layouts, strict=True):
        bar = tqdm(
            total=0,
            desc=source.name,
            unit="tile",
            disable=args.no_progress,
            dynamic_ncols=True,
            leave=True,
        )

        def progress(done: int, total: int, bar: Any = bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = predict(
                model,
                source.data,
                device=args.device,
                mode=mode,
                generations=args.generations,
                seed=args.seed,
                axes=layout,
                tile=args.tile,
                halo=args.halo,
                precision=args.precision,
                progress=progress,
                **live,
            )
        except InputError as exc:
            raise InputError(f"{source.path}: {exc}") from None
        finally:
            bar.close()
        meta = result.metadata
        provenance = {
            "input": str(source.path),
            **{k: v for k, v in meta.items() if k != "normalization_stats"},
        }
        common = {"pixel_size": source.pixel_size, "provenance": provenance}
        write_float32_tiff(
            out_dir / f"{source.name}_sted.tif",
            result.synthetic_sted,
            axes=_output_axes(layout, segmentation=False),
            name=f"{source.name} synthetic STED",
            **common,
        )
        if result.segmentation is not None:
            provenance_seg = {**provenance, "classes": list(result.class_names)}
            write_float32_tiff(
                out_dir / f"{source.name}_seg.tif",
                result.segmentation,
                axes=_output_axes(layout, segmentation=True),
                name=f"{source.name} segmentation",
                pixel_size=source.pixel_size,
                provenance=provenance_seg,
            )
        if result.variability is not None:
            write_float32_tiff(
                out_dir / f"{source.name}_sted_std.tif",
                result.variability,
                axes=_output_axes(layout, segmentation=False),
                name=f"{source.name} variability",
                **common,
            )
    print(f"wrote results for {len(sources)} image(s) to {out_dir}")
    return 0
