"""``napari-tagan export``: a model as a package other tools open (bioimage.io)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "export",
        help="export a model as a bioimage.io model package (.zip)",
        description=(
            "Write MODEL (a .tagan bundle, checkpoint folder or registry name) as a "
            "bioimage.io model package (bioimageio.spec 0.5): G and S as one two-output "
            "network in ONNX, TorchScript and PyTorch state-dict formats, pre-processing "
            "equal to the model's normalization, halo, simulated test tensors, cover and "
            "citation. Only the deterministic eval mode can be expressed. The package "
            "opens again with --model OUT.zip."
        ),
    )
    p.add_argument("model", help=".tagan bundle, checkpoint folder or registry name")
    p.add_argument("output", help="package to write (.zip)")
    p.add_argument("--format", choices=("bioimageio",), default="bioimageio")
    p.add_argument("--epoch", help="epoch of an original checkpoint folder")
    p.add_argument("--preset", help="preset of an original checkpoint (default: inferred)")
    p.add_argument("--name", help="the package's display name")
    p.add_argument("--author", action="append", help="author name (repeatable)")
    p.add_argument("--licence", default="BSD-3-Clause", help="SPDX licence id")
    p.add_argument("--parent", help="bioimage.io id of the model this one was fine-tuned from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from pathlib import Path

    from napari_tagan.core.errors import InputError
    from napari_tagan.core.registry import load_named_model

    output = Path(args.output)
    if output.suffix != ".zip":
        raise InputError(f"{output}: a bioimage.io package is a .zip file")
    from napari_tagan.core.bioimageio import bioimageio_problem, export_bioimageio

    problem = bioimageio_problem()
    if problem:  # before loading the model: say it at once
        raise InputError(problem)
    model = load_named_model(args.model, epoch=args.epoch, preset=args.preset)
    if output.exists() and output.resolve() == Path(model.source).resolve():
        raise InputError(f"{output} is the model being exported: choose another output")
    path = export_bioimageio(
        model,
        output,
        name=args.name,
        authors=tuple(args.author or ("napari-tagan",)),
        licence=args.licence,
        parent_id=args.parent,
    )
    print(f"wrote {path}")
    return 0
