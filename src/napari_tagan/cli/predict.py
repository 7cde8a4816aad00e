"""``napari-tagan predict``: enhance confocal images (synthetic STED + segmentation)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import Any

from . import guide

# core.backends.BACKENDS, spelled out so that --help does not import torch (a test compares)
BACKEND_CHOICES = ("auto", "eager", "channels_last", "onnx", "openvino")


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
    p.add_argument(
        "--model", required=True, help=".tagan bundle, checkpoint folder or registry name"
    )
    p.add_argument("--epoch", help="epoch of an original checkpoint folder (default: latest)")
    p.add_argument("--preset", help="preset of an original checkpoint (default: inferred)")
    p.add_argument(
        "--output", required=True, help="folder for the results (OUT.zarr: OME-Zarr images)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace results already in the output folder"
    )
    p.add_argument("--tile", type=int, help="core tile side in pixels (default: from memory)")
    p.add_argument(
        "--halo",
        help="tile context: pixels, or 'full' (the receptive field); default: measured",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="how the networks run; auto: OpenVINO, else ONNX Runtime, else torch "
        "(napari-tagan info --system says which and why)",
    )
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
    from .distributed import add_arguments

    add_arguments(p)
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


# --- original TA-GAN files ------------------------------------------------------------------
# TODO(layouts): point at core/layouts.py's table once it exists (the reader's layouts).

#: Channels-first TA-GAN layouts by channel count: (confocal channels, mask channels).
_TAGAN_FILE_CHANNELS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    3: ((0,), (2,)),  # axons, nanodomains: confocal, STED, mask
    4: ((0,), (2, 3)),  # dendrites: confocal, STED, rings, fibers
    6: ((0, 3), (2, 5)),  # synprot: per colour confocal, STED, spots
}
_MASK_ON_VALUES = (1, 255, 32768, 65535)


def _is_mask(channel: Any) -> bool:
    import numpy as np

    values = np.unique(np.asarray(channel))
    return values.size <= 2 and all(v == 0 or v in _MASK_ON_VALUES for v in values)


def tagan_file_confocal(source: Any, channels: int) -> Any:
    """``source`` reduced to its confocal channel(s) if it is an original TA-GAN file.

    A (C, Y, X) integer image whose channel count is a TA-GAN layout's, whose mask
    channels are binary and whose other channels are not, holds confocal, STED and masks
    (as the reader opens it): the model gets the confocal. Anything else is unchanged.
    """
    import dataclasses

    import numpy as np

    data, axes = source.data, source.axes
    if len(data.shape) != 3 or axes[:1] in ("Z", "T") or min(data.shape[1:]) < 8:
        return source
    if not np.issubdtype(np.dtype(data.dtype), np.integer):
        return source
    confocal, masks = _TAGAN_FILE_CHANNELS.get(int(data.shape[0]), ((), ()))
    images = [i for i in range(int(data.shape[0])) if i not in masks]
    if len(confocal) != channels or not all(_is_mask(data[i]) for i in masks):
        return source
    if any(_is_mask(data[i]) for i in images):
        return source
    picked = data[confocal[0]] if channels == 1 else np.stack([data[i] for i in confocal])
    print(f"{source.path}: an original TA-GAN file (confocal, STED, masks): using its confocal")
    return dataclasses.replace(source, data=picked, axes="YX" if channels == 1 else "CYX")


# --- running -----------------------------------------------------------------------------


def _output_axes(layout: str, *, segmentation: bool) -> str:
    if segmentation:  # classes take the place of channels
        return "ZCYX" if layout[0] in "ZT" else "CYX"
    return layout.replace("T", "Z") if layout[0] == "T" else layout


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.guards import run_folder_lock
    from napari_tagan.core.prediction import RunOptions
    from napari_tagan.core.prediction.options import parse_halo
    from napari_tagan.core.registry import load_named_model
    from napari_tagan.core.tiff import expand_inputs

    if args.generations < 1:
        raise InputError(f"--generations must be ≥ 1, got {args.generations}")
    if args.tile is not None and args.tile < 1:
        raise InputError(f"--tile must be ≥ 1, got {args.tile}")
    halo = None if args.halo is None else parse_halo(args.halo)
    options = RunOptions(
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        halo=halo,
        backend=args.backend,
    )
    paths = expand_inputs(args.inputs)
    if args.scheduler or args.workers:
        from .distributed import run_distributed

        return run_distributed(args)
    out_dir = check_output_folder(Path(args.output), args.inputs)
    model = load_named_model(
        args.model, epoch=args.epoch, preset=args.preset, progress=not args.no_progress
    )
    sources, layouts = _open_inputs(paths, model.config.image_channels)
    live = guide.region_options(args, model, sources)
    plan_outputs(out_dir, sources, model, args)
    failed: list[str] = []
    with _removed_if_empty(out_dir), run_folder_lock(out_dir):  # one writer per folder
        for source, layout in zip(sources, layouts, strict=True):
            try:
                result = _predict_one(model, source, layout, options, args, live)
                _write_results(out_dir, source, layout, result)
            except InputError as exc:
                if len(sources) == 1:
                    raise
                failed.append(source.name)
                print(f"napari-tagan predict: error: {exc}", file=sys.stderr)
    done = len(sources) - len(failed)
    failures = f"; {len(failed)} failed ({', '.join(failed)})" if failed else ""
    print(f"wrote results for {done} image(s) to {out_dir}{failures}")
    return 2 if failed else 0


def check_output_folder(out_dir: Path, inputs: list[str]) -> Path:
    """Refuse an output that is a TIFF file name, a file, or one of the input folders."""
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.guards import check_not_input

    if out_dir.suffix.lower() in (".tif", ".tiff") or out_dir.is_file():
        raise InputError(
            f"--output {out_dir} names a file; the output is a folder (one X_sted.tif per input)"
        )
    folders = [p if Path(p).is_dir() else Path(p).parent for p in inputs]
    check_not_input(out_dir, folders, "--output folder")
    return out_dir


def plan_outputs(out_dir: Path, sources: list[Any], model: Any, args: argparse.Namespace) -> None:
    """Refuse to replace existing results (without --overwrite) or to fill the disk."""
    from napari_tagan.core.guards import check_disk_space, check_overwrite

    planes = 1 + (model.config.n_classes if model.segmenter is not None else 0)
    planes += model.config.output_nc if args.generations > 1 else 0
    names = ["sted"] + ["seg"] * (model.segmenter is not None)
    names += ["sted_std"] * (args.generations > 1)
    if out_dir.suffix != ".zarr":  # an OME-Zarr output is a store of its own
        planned = [out_dir / f"{s.name}_{n}.tif" for s in sources for n in names]
        check_overwrite(planned, args.overwrite)
    nbytes = sum(4 * planes * math.prod(int(n) for n in s.data.shape) for s in sources)
    check_disk_space(out_dir, nbytes, f"the results in {out_dir}")


@contextlib.contextmanager
def _removed_if_empty(folder: Path) -> Any:
    """Create ``folder``; a run that fails before writing anything leaves no empty folder."""
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if not existed and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _open_inputs(paths: list[Path], channels: int) -> tuple[list[Any], list[str]]:
    """Open every input (headers only) and find its layout before predicting anything."""
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.tiff import read_image

    sources = [tagan_file_confocal(read_image(p), channels) for p in paths]
    layouts = [stack_axes(s, channels) for s in sources]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"several inputs are named {dup[0]!r}: their outputs would collide")
    return sources, layouts


def _predict_one(
    model: Any,
    source: Any,
    layout: str,
    options: Any,
    args: argparse.Namespace,
    live: dict[str, Any] | None = None,
) -> Any:
    """One input through the model, with a progress bar; errors name the input."""
    from tqdm import tqdm

    from napari_tagan.core.errors import InputError
    from napari_tagan.core.prediction import predict

    bar = tqdm(
        total=0,
        desc=source.name,
        unit="tile",
        disable=args.no_progress,
        dynamic_ncols=True,
        leave=True,
    )

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return predict(
            model,
            source.data,
            mode=args.mode or ("mc" if args.generations > 1 else "eval"),
            generations=args.generations,
            seed=args.seed,
            axes=layout,
            options=options,
            progress=progress,
            **(live or {}),
        )
    except InputError as exc:
        raise InputError(f"{source.path}: {exc}") from None
    finally:
        bar.close()


def _write_results(out_dir: Path, source: Any, layout: str, result: Any) -> None:
    """X_sted.tif, X_seg.tif and X_sted_std.tif (as computed), with provenance."""
    provenance = {
        "input": str(source.path),
        **{k: v for k, v in result.metadata.items() if k != "normalization_stats"},
    }
    if out_dir.suffix == ".zarr":
        from napari_tagan.core.omezarr import write_prediction_omezarr

        write_prediction_omezarr(
            out_dir,
            source.name,
            result,
            axes=_output_axes(layout, segmentation=False),
            seg_axes=_output_axes(layout, segmentation=True),
            pixel_size=source.pixel_size,
            provenance=provenance,
        )
        return
    outputs = [("sted", "synthetic STED", result.synthetic_sted, provenance)]
    if result.segmentation is not None:
        seg_provenance = {**provenance, "classes": list(result.class_names)}
        outputs.append(("seg", "segmentation", result.segmentation, seg_provenance))
    if result.variability is not None:
        outputs.append(("sted_std", "variability", result.variability, provenance))
    for suffix, what, data, meta in outputs:
        target = out_dir / f"{source.name}_{suffix}.tif"
        try:
            _write_one(target, data, layout, source, what, meta, suffix)
        except OSError as exc:  # name the file (numpy's short writes carry none)
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None


def _write_one(
    target: Path, data: Any, layout: str, source: Any, what: str, meta: Any, suffix: str
) -> None:
    from napari_tagan.core.tiff import write_float32_tiff

    write_float32_tiff(
        target,
        data,
        axes=_output_axes(layout, segmentation=suffix == "seg"),
        name=f"{source.name} {what}",
        pixel_size=source.pixel_size,
        provenance=meta,
    )
