"""``napari-tagan simulate``: write a simulated dataset in the original TA-GAN layout."""

from __future__ import annotations

import argparse

#: napari_tagan.core.simulate.dataset.WRITABLE, spelt out so that --help imports no scipy.
STRUCTURES = ("axons", "dendrites", "nanodomains", "saureus")


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "simulate",
        help="write a simulated confocal/STED dataset (train/valid/test folders)",
        description=(
            "Simulate paired confocal and STED images with ground-truth masks and write "
            "them as one multi-page TIFF per sample, in the original TA-GAN layout."
        ),
    )
    p.add_argument("structure", choices=STRUCTURES)
    p.add_argument("output", help="dataset root to create")
    p.add_argument("--train", type=int, default=16, help="training samples (default 16)")
    p.add_argument("--valid", type=int, default=4, help="validation samples (default 4)")
    p.add_argument("--test", type=int, default=0, help="test samples (default 0)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.simulate import write_dataset

    if min(args.train, args.valid, args.test) < 0 or args.size < 16:
        raise InputError("sample counts must be ≥ 0 and --size ≥ 16")
    root = write_dataset(
        args.output,
        args.structure,
        n_train=args.train,
        n_valid=args.valid,
        n_test=args.test,
        shape=(args.size, args.size),
        seed=args.seed,
    )
    print(f"wrote {args.train} train, {args.valid} valid, {args.test} test samples to {root}")
    return 0
