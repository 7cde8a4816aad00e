"""``napari-tagan convert``: original TA-GAN checkpoint folder → ``.tagan`` bundle."""

from __future__ import annotations

import argparse

from napari_tagan.core.config import PRESET_NAMES


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "convert",
        help="convert an original TA-GAN checkpoint folder to a .tagan model bundle",
        description="Read {epoch}_net_G.pth (+ S, D) from a folder and write one .tagan file.",
    )
    p.add_argument("checkpoint", help="original checkpoint folder or one of its *_net_G.pth")
    p.add_argument("output", help="bundle to write (e.g. axons.tagan)")
    p.add_argument("--epoch", default=None, help="epoch name: latest, best or a number")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None, help="the model's preset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.core.checkpoints import convert_original, read_bundle

    path = convert_original(
        args.checkpoint,
        args.output,
        epoch=args.epoch,
        preset=args.preset,
        overwrite=args.overwrite,
    )
    model = read_bundle(path).model
    nets = ", ".join(model.networks())
    print(f"wrote {path} (preset {model.config.preset}; {nets})")
    return 0
