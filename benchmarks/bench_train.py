"""Seconds per training iteration: the Trainer's step vs a plain eager reference step.

Real sizes: batch 8, crop 128, ResNet-9 G (ngf 64), ResNet-6 S (nsf 64), 70×70 PatchGAN D
(ndf 64), axons preset (BatchNorm, vanilla GAN, λ_seg 10). The reference is the original
TA-GAN iteration written plainly (eager, contiguous tensors, default Adam, gradients
zeroed in place): forward G, S(real), S(fake); D update on real vs detached fake; G update
with D frozen, S's weight gradients computed and thrown away as the original does; S
update. Both start from the same weights, step on the same batch with the same dropout
seed per iteration, and alternate iteration by iteration in one process so that load
from other processes affects both alike. At the end the two models' weights are compared
(``weight_disagreement``: per network, how far apart they are relative to how far
training moved them; large channels-last or in bf16, where dropout draws other masks and
Adam's first, nearly sign, steps turn small differences into whole ones).

    python benchmarks/bench_train.py                        # CPU
    python benchmarks/bench_train.py --amp                  # CPU, bf16 (AMX/AVX512-BF16)
    python benchmarks/bench_train.py --device cuda --amp    # GPU, mixed precision
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch
from torch.nn import functional as F

from napari_tagan.core import TAGANModel, preset_config
from napari_tagan.core.device import deterministic_algorithms, resolve_device
from napari_tagan.core.training import Trainer, dataset_from_arrays


def reference_step(
    model: TAGANModel, opts: dict, g_in, real, targets, lambda_seg: float
) -> tuple[float, float, float]:
    """The original's iteration, eager and plain."""
    g, s, d = model.generator, model.segmenter, model.discriminator
    fake = g(g_in)
    seg_real = s(real)
    seg_fake = s(fake)
    for p in d.parameters():
        p.requires_grad_(True)
    opts["d"].zero_grad(set_to_none=False)
    pred_fake = d(torch.cat([g_in, fake.detach()], 1))
    loss_d_fake = F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
    pred_real = d(torch.cat([g_in, real], 1))
    loss_d_real = F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
    loss_d = 0.5 * (loss_d_fake + loss_d_real)
    loss_d.backward()
    opts["d"].step()
    for p in d.parameters():
        p.requires_grad_(False)
    opts["g"].zero_grad(set_to_none=False)
    pred = d(torch.cat([g_in, fake], 1))
    loss_g = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
    loss_g = loss_g + lambda_seg * F.mse_loss(seg_fake, targets)
    loss_g.backward()
    opts["g"].step()
    opts["s"].zero_grad(set_to_none=False)
    loss_s = lambda_seg * F.mse_loss(seg_real, targets)
    loss_s.backward()
    opts["s"].step()
    for p in d.parameters():
        p.requires_grad_(True)
    return loss_d.item(), loss_g.item(), loss_s.item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weight_agreement(a: TAGANModel, b: TAGANModel, start: TAGANModel) -> dict[str, float]:
    """Per network, ‖a − b‖ / ‖a − start‖: the models' disagreement relative to how far
    training moved the weights (small when both steps draw the same dropout masks)."""
    out = {}
    for role, net in a.networks().items():
        other = dict(getattr(b, role).named_parameters())
        first = dict(getattr(start, role).named_parameters())
        diff = moved = 0.0
        for name, p in net.named_parameters():
            p = p.detach().float().cpu()
            diff += float((p - other[name].detach().float().cpu()).pow(2).sum())
            moved += float((p - first[name].detach().float()).pow(2).sum())
        out[role] = (diff / moved) ** 0.5 if moved > 0 else float("nan")
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations of each")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations of each")
    ap.add_argument("--amp", action="store_true", help="Trainer with mixed precision")
    ap.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="Trainer's memory format (auto: the Trainer's default, channels-last on CUDA "
        "and with bf16 on the CPU)",
    )
    ap.add_argument("--json", help="also write the figures to this file")
    return ap.parse_args()


def make_data(cfg, batch: int, crop: int):
    """``batch`` gamma-noise images a little larger than the crop, with threshold masks."""
    rng = np.random.default_rng(0)
    size = crop + 32
    conf = [rng.gamma(2.0, 30.0, (size, size)).astype(np.float32) for _ in range(batch)]
    sted = [c * 0.7 for c in conf]
    masks = [(c > 60)[None] for c in conf]
    return dataset_from_arrays(cfg, conf, sted, masks)


def reference_model(cfg, device: torch.device) -> tuple[TAGANModel, dict]:
    """The reference's model (seed 0) and its plain Adam optimizers."""
    torch.manual_seed(0)
    model = TAGANModel.from_config(cfg, with_discriminator=True).to(device)
    for net in model.networks().values():
        net.train()
    nets = (("g", model.generator), ("s", model.segmenter), ("d", model.discriminator))
    opts = {
        k: torch.optim.Adam(n.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) for k, n in nets
    }
    return model, opts


def time_both(args, device, trainer, ref_model, ref_opts) -> dict[str, list[float]]:
    """Alternating iterations of the reference and the trainer on one batch."""
    trainer.steps.train_mode()
    batch = trainer._next_batch()
    g_in, real, targets = (x.contiguous() for x in (batch.g_input, batch.sted, batch.targets))
    lambda_seg = trainer.config.lambda_seg
    times: dict[str, list[float]] = {"reference": [], "trainer": []}
    for i in range(args.warmup + args.iterations):
        order = ("reference", "trainer") if i % 2 == 0 else ("trainer", "reference")
        for name in order:
            torch.manual_seed(1000 + i)  # the same dropout masks for both
            sync(device)
            t0 = time.perf_counter()
            if name == "reference":
                reference_step(ref_model, ref_opts, g_in, real, targets, lambda_seg)
            else:
                with deterministic_algorithms(trainer.deterministic):
                    trainer.train_step(batch)
            sync(device)
            dt = time.perf_counter() - t0
            timed = i >= args.warmup
            if timed:
                times[name].append(dt)
            print(f"{'timed' if timed else 'warm-up'} {name}: {dt:.3f} s", flush=True)
    return times


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    cfg = preset_config("axons", batch_size=args.batch, crop_size=args.crop)
    data = make_data(cfg, args.batch, args.crop)
    ref_model, ref_opts = reference_model(cfg, device)
    torch.manual_seed(0)
    model = TAGANModel.from_config(cfg, with_discriminator=True)
    torch.manual_seed(0)
    start = TAGANModel.from_config(cfg, with_discriminator=True)
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    trainer = Trainer(
        model,
        data,
        output_dir=tempfile.mkdtemp(prefix="bench_train_"),
        iterations=10**6,
        device=device,
        amp=args.amp,
        channels_last=channels_last,
        # cuDNN autotuning on GPU; on CPU the flag changes nothing measurable.
        deterministic=device.type != "cuda",
    )
    times = time_both(args, device, trainer, ref_model, ref_opts)
    ref = statistics.median(times["reference"])
    ours = statistics.median(times["trainer"])
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "crop": args.crop,
        "amp": trainer.amp_dtype is not None,
        "amp_dtype": trainer.amp_name,
        "channels_last": trainer.memory_format == torch.channels_last,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "reference_s_per_it": round(ref, 3),
        "trainer_s_per_it": round(ours, 3),
        "speedup": round(ref / ours, 3),
        "reference_times": [round(t, 3) for t in times["reference"]],
        "trainer_times": [round(t, 3) for t in times["trainer"]],
        "weight_disagreement": weight_agreement(ref_model, model, start),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
