"""``napari-tagan train``: train or fine-tune a TA-GAN model on a dataset."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "train",
        help="train (or fine-tune, or resume) a TA-GAN model",
        description=(
            "Train G, D and S on paired confocal/STED data in the original TA-GAN layouts "
            "(a root with train/ and valid/, a split folder, or TIFF files). The output "
            "folder receives latest.tagan, best.tagan, periodic iter_NNNNNN.tagan bundles, "
            "losses.csv and metrics.csv. Ctrl-C stops after the current iteration and saves "
            "latest.tagan; --resume continues from it. Under torchrun the run is "
            "data-parallel (DDP)."
        ),
    )
    p.add_argument(
        "--data", required=True, nargs="+", help="dataset root, split folder or TIFF files"
    )
    p.add_argument("--valid", help="validation folder (default: DATA/valid when it exists)")
    p.add_argument("--preset", help="preset of a new model (default: the --from model's)")
    p.add_argument(
        "--from", dest="from_model", help="fine-tune from a .tagan bundle or checkpoint folder"
    )
    p.add_argument("--epoch", help="epoch of an original checkpoint folder (--from)")
    p.add_argument("--segmenter", help="pretrained S to load (frozen for the live preset)")
    p.add_argument("--output", required=True, help="folder for bundles and CSV logs")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, help="number of iterations in total")
    length.add_argument("--epochs", type=int, help="number of epochs in total")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="crop side in pixels (0: whole images)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--validate-every", type=int, help="iterations between validations")
    p.add_argument("--checkpoint-every", type=int, help="iterations between bundles")
    p.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: bf16/fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16",
    )
    p.add_argument(
        "--no-deterministic",
        action="store_true",
        help="allow non-deterministic (faster) GPU kernels; a resumed run then differs slightly",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set ngf=16 --set lambda_seg=5 "
        "--set normalization.kind=percentile",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings → dict; values are JSON when they parse, else strings."""
    from napari_tagan.core.config import ModelConfig
    from napari_tagan.core.errors import InputError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        field, _, sub = key.partition(".")
        if field not in ModelConfig.model_fields:
            raise InputError(
                f"--set {field}: no such config field; fields: "
                + ", ".join(sorted(ModelConfig.model_fields))
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if sub:  # normalization.kind=percentile: one key of a sub-config
            out.setdefault(field, {})[sub] = value
        else:
            out[key] = value
    return out


def _datasets(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.training import dataset_from_folder
    from napari_tagan.core.training.data import dataset_from_files

    paths = [Path(p) for p in args.data]
    if len(paths) == 1 and paths[0].is_dir():
        train = dataset_from_folder(paths[0], config, split="train")
        default_valid = paths[0] / "valid"
    else:
        train = dataset_from_files(paths, config)
        default_valid = None
    if args.valid:
        valid = dataset_from_folder(args.valid, config, split="valid")
    elif default_valid is not None and default_valid.is_dir():
        valid = dataset_from_folder(default_valid, config, split="valid")
    else:
        valid = None
        if not Path(args.data[0]).exists():
            raise InputError(f"dataset not found: {args.data[0]}")
    return train, valid


def _start(args: argparse.Namespace) -> Any:
    """The run's :class:`~napari_tagan.core.training.prepare.RunStart` from the options."""
    from napari_tagan.core.training.prepare import RunStart

    return RunStart(
        output_dir=Path(args.output),
        resume=args.resume,
        preset=args.preset,
        from_model=args.from_model,
        epoch=args.epoch,
        overrides=parse_overrides(args.overrides),
        segmenter=args.segmenter,
        seed=args.seed,
    )


def _prepare(args: argparse.Namespace, callbacks: Any) -> Any:
    """The trainer (core's one decision tree), its errors worded with this CLI's options."""
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.training.prepare import (
        PresetRequiredError,
        ResumeConflictError,
        prepare_run,
    )

    try:
        return prepare_run(
            _start(args),
            lambda config: _datasets(args, config),
            iterations=args.iterations,
            epochs=args.epochs,
            batch_size=args.batch_size,
            crop_size=args.crop,
            device=args.device,
            validate_every=args.validate_every,
            checkpoint_every=args.checkpoint_every,
            callbacks=callbacks,
            amp=args.amp,
            deterministic=not args.no_deterministic,
        )
    except ResumeConflictError as exc:
        raise InputError(
            "--resume continues a run as it was: drop --from/--preset/--set/--segmenter"
        ) from exc
    except PresetRequiredError as exc:
        raise InputError("give --preset for a new model (or --from to fine-tune)") from exc


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from tqdm import tqdm

    from napari_tagan.core.training import TrainerCallbacks
    from napari_tagan.core.training.distributed import launched_distributed, shutdown_distributed

    main = not launched_distributed() or int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(total=0, unit="it", disable=args.no_progress or not main, dynamic_ncols=True)
    shown: dict[str, str] = {}

    def on_iteration(i: int, total: int, losses: dict[str, float], lr: float) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = i
        shown.update({k: f"{v:.3g}" for k, v in losses.items() if k in ("D", "G", "S")})
        bar.set_postfix(shown, refresh=False)
        bar.update(0)

    def on_validation(i: int, metrics: dict[str, float]) -> None:
        shown.update({k: f"{v:.3g}" for k, v in metrics.items() if k in ("psnr", "ssim", "dice")})
        bar.set_postfix(shown, refresh=True)

    callbacks = TrainerCallbacks(on_iteration=on_iteration, on_validation=on_validation)
    trainer = _prepare(args, callbacks)
    bar.total = trainer.total
    bar.n = trainer.iteration

    def stop(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()
        if main:
            bar.write("stopping after this iteration (Ctrl-C again to abort)…")

    previous = signal.signal(signal.SIGINT, stop)
    try:
        summary = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    shutdown_distributed()
    if main:
        state = "stopped" if summary.stopped_early else "finished"
        last = summary.metrics[-1] if summary.metrics else {}
        scores = ", ".join(f"{k} {last[k]:.4g}" for k in ("psnr", "ssim", "dice") if k in last)
        print(
            f"{state} at iteration {summary.iterations}/{trainer.total}"
            + (f" ({scores})" if scores else "")
            + f"; latest: {summary.latest}"
            + (f"; best: {summary.best}" if summary.best else "")
        )
    return 0
