"""``napari-tagan info``: describe a model (bundle or original checkpoint folder)."""

from __future__ import annotations

import argparse
import json

from napari_tagan.core.config import PRESET_NAMES


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "info",
        help="show a model's preset, networks, config and provenance; --system: this machine",
    )
    p.add_argument("model", nargs="?", help=".tagan bundle or original checkpoint folder")
    p.add_argument(
        "--system",
        action="store_true",
        help="which backend and precision a prediction will use here, and why",
    )
    p.add_argument("--device", default="auto", help="device of --system (auto, cpu, cuda...)")
    p.add_argument("--epoch", default=None, help="epoch of an original checkpoint")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None)
    p.add_argument("--json", action="store_true", help="print the full config as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.core.checkpoints import load_model
    from napari_tagan.core.errors import InputError

    if args.system:
        from napari_tagan.core.backends.system import system_report

        print("\n".join(system_report(args.device)))
        if args.model is None:
            return 0
    elif args.model is None:
        raise InputError("info needs a model (.tagan bundle or checkpoint folder), or --system")

    model = load_model(args.model, epoch=args.epoch, preset=args.preset, with_discriminator=True)
    if args.json:
        print(
            json.dumps(
                {
                    "config": model.config.model_dump(mode="json"),
                    "provenance": model.provenance.model_dump(mode="json"),
                },
                indent=2,
            )
        )
        return 0
    cfg = model.config
    print(f"source:     {model.source}")
    print(f"preset:     {cfg.preset} — {cfg.description}")
    for role, net in model.networks().items():
        n = sum(p.numel() for p in net.parameters())
        print(f"{role + ':':<11} {n / 1e6:.2f} M parameters")
    print(f"channels:   {', '.join(cfg.channel_names)}  →  classes: {', '.join(cfg.class_names)}")
    print(f"normalize:  {cfg.normalization.kind}")
    print(f"trained:    {model.provenance.iterations} iterations")
    return 0
