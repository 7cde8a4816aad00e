"""``napari-tagan demo``: simulate, train a small TA-GAN, enhance, write results."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    from napari_tagan.demo import DemoSettings

    d = DemoSettings()
    p = sub.add_parser(
        "demo",
        help="simulate axons, train a small model on them, enhance a held-out image",
        description=(
            "The one-command demo: simulated confocal/STED axons with ring masks, a small "
            "TA-GAN trained on CPU for a few minutes, then held-out images enhanced and "
            "scored (PSNR/SSIM against the simulated STED, Dice against the masks) next to "
            "the confocal, with the Dice of S on the real STED as an upper bound. Writes "
            "TIFFs, metrics.json and demo.png."
        ),
    )
    p.add_argument("--output", default="demo-output", help="folder to write (default demo-output)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--ngf", type=int, default=d.ngf, help="filters of G, S and D")
    p.add_argument("--train", type=int, default=d.n_train, help="training images")
    p.add_argument("--valid", type=int, default=d.n_valid, help="validation images")
    p.add_argument("--size", type=int, default=d.train_size, help="training image side")
    p.add_argument("--test", type=int, default=d.n_test, help="held-out images")
    p.add_argument("--test-size", type=int, default=d.test_size, help="held-out image side")
    p.add_argument("--crop", type=int, default=d.crop_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--amp", action="store_true", help="train in mixed precision (see napari-tagan train)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    from napari_tagan.demo import DemoSettings, run_demo

    settings = DemoSettings(
        iterations=args.iterations,
        ngf=args.ngf,
        n_train=args.train,
        n_valid=args.valid,
        n_test=args.test,
        train_size=args.size,
        test_size=args.test_size,
        crop_size=args.crop,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        amp=args.amp,
    )
    run_demo(args.output, settings)
    return 0
