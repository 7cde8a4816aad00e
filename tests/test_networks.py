"""The networks reproduce the original TA-GAN state-dict layouts exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from napari_tagan.core.networks import (
    ARCH_STRIDE,
    build_discriminator,
    build_generator,
    build_segmenter,
    init_weights,
)

LAYOUTS = Path(__file__).parent / "data" / "tagan-state-dict-layouts.txt"
_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _sections() -> list[tuple[str, list[tuple[str, tuple[int, ...], str]]]]:
    text = LAYOUTS.read_text()
    out = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        head, *lines = block.strip().splitlines()
        rows = []
        for line in lines:
            if "\t" not in line:
                continue
            key, shape, dtype = line.split("\t")
            rows.append((key, tuple(int(d) for d in re.findall(r"\d+", shape)), dtype))
        out.append((head, rows))
    return out


SECTIONS = _sections()


def _build(head: str) -> torch.nn.Module:
    role, arch = head.split()[:2]
    opts = dict(re.findall(r"(\w+)=(\w+)", head))
    norm, in_nc = opts["norm"], int(opts["input_nc"])
    if role == "G":
        return build_generator(
            arch, in_nc, int(opts["output_nc"]), int(opts["ngf"]), norm, opts["dropout"] == "on"
        )
    if role == "S":
        return build_segmenter(arch, in_nc, int(opts["output_nc"]), int(opts["nsf"]), norm)
    return build_discriminator(arch, in_nc, int(opts["ndf"]), norm)


def test_reference_file_lists_every_network():
    heads = [h for h, _ in SECTIONS]
    assert len(heads) == 13
    assert any(h.startswith("S unet_32") for h in heads)
    assert any("norm=instance" in h for h in heads)


@pytest.mark.parametrize("head,rows", SECTIONS, ids=[h.split(" (")[0] for h, _ in SECTIONS])
def test_layout_matches_original_and_loads_strictly(head, rows):
    with torch.device("meta"):
        net = _build(head)
    mine = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert mine == [(k, s) for k, s, _ in rows]  # same keys, same order, same shapes
    # A state dict built from the reference layout loads with strict=True.
    state = {k: torch.zeros(s, dtype=_DTYPES[d]) for k, s, d in rows}
    net = _build(head) if "ngf=64" not in head and "nsf=64" not in head else net
    missing_unexpected = net.load_state_dict(state, strict=True, assign=True)
    assert not missing_unexpected.missing_keys and not missing_unexpected.unexpected_keys


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("arch", ["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"])
def test_generators_any_channels_and_norms_end_in_tanh(arch, norm):
    net = build_generator(arch, 3, 2, ngf=4, norm=norm, dropout=True).eval()
    side = max(2 * ARCH_STRIDE[arch], 16)
    x = torch.randn(1, 3, side, side) * 10
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 2, side, side)
    assert y.abs().max() <= 1.0
    has_bias = any(k.endswith("bias") and "model.1." in k for k in net.state_dict())
    if arch.startswith("resnet"):
        assert has_bias == (norm == "instance")


def test_dropout_layer_present_in_generator_blocks_even_when_off():
    off = build_generator("resnet_9blocks", 1, 1, ngf=4, dropout=False)
    on = build_generator("resnet_9blocks", 1, 1, ngf=4, dropout=True)
    assert off.model[10].conv_block[4].p == 0.0
    assert on.model[10].conv_block[4].p == 0.5
    seg = build_segmenter("resnet_6blocks", 1, 1, nsf=4)
    assert not any(isinstance(m, torch.nn.Dropout) for m in seg.modules())


@pytest.mark.parametrize("arch", ["resnet_6blocks", "unet_128", "unet_32"])
def test_segmenters(arch):
    net = build_segmenter(arch, 2, 3, nsf=4).eval()
    side = max(2 * ARCH_STRIDE[arch], 16)
    with torch.no_grad():
        assert net(torch.randn(1, 2, side, side)).shape == (1, 3, side, side)


@pytest.mark.parametrize(
    "arch,n_layers,patch",
    [("basic", 3, 6), ("n_layers", 2, 14), ("n_layers", 4, 2), ("pixel", 3, 64)],
)
def test_discriminators_patch_maps(arch, n_layers, patch):
    net = build_discriminator(arch, 2, ndf=4, n_layers=n_layers)
    assert net(torch.randn(1, 2, 64, 64)).shape == (1, 1, patch, patch)


@pytest.mark.parametrize("init", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights(init):
    torch.manual_seed(0)
    net = init_weights(build_generator("resnet_6blocks", 1, 1, ngf=8), init, 0.02)
    conv = net.model[4].weight
    bn = net.model[5]
    assert torch.all(bn.bias == 0)
    if init == "normal":
        assert abs(conv.std().item() - 0.02) < 0.005
        assert abs(bn.weight.mean().item() - 1.0) < 0.02
    elif init == "kaiming":
        fan_in = conv.shape[1] * 9
        assert abs(conv.std().item() - (2 / fan_in) ** 0.5) < 0.2 * (2 / fan_in) ** 0.5
    else:
        assert conv.std().item() < 0.05
    with pytest.raises(ValueError, match="unknown init"):
        init_weights(net, "uniform")  # type: ignore[arg-type]


def test_unknown_architectures_are_named():
    with pytest.raises(ValueError, match="unknown generator 'unet_16'"):
        build_generator("unet_16", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown segmenter"):
        build_segmenter("resnet_9blocks", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator("huge", 2)  # type: ignore[arg-type]


def test_one_registry_names_strides_locality_and_roles():
    from typing import get_args

    from napari_tagan.core.networks import (
        ARCHS,
        ROLE_NAMES,
        DiscriminatorName,
        GeneratorName,
        SegmenterName,
        arch_spec,
        stride_multiple,
    )

    # the typed config's names are exactly the registered ones, role by role
    assert set(get_args(GeneratorName)) == set(ROLE_NAMES["generator"])
    assert set(get_args(SegmenterName)) == set(ROLE_NAMES["segmenter"])
    assert set(get_args(DiscriminatorName)) == set(ROLE_NAMES["discriminator"])
    assert {n for n, s in ARCHS.items() if s.local and s.stride > 1} == {
        "resnet_9blocks",
        "resnet_6blocks",
    }
    assert ARCH_STRIDE == {"resnet_9blocks": 4, "resnet_6blocks": 4, "unet_32": 32,
                           "unet_128": 128, "unet_256": 256}  # fmt: skip
    assert stride_multiple("resnet_9blocks", None) == 4
    assert stride_multiple("resnet_9blocks", "unet_32") == 32
    assert arch_spec("unet_128").roles == {"generator", "segmenter"}


def test_unknown_architectures_are_input_errors_everywhere():
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.networks import stride_multiple
    from napari_tagan.core.tiling import default_halo, receptive_field

    for call in (
        lambda: stride_multiple("unet_16"),
        lambda: receptive_field("unet_16"),  # never a silent fall-back to blending
        lambda: default_halo("resnet_9blocks", "segmenter"),
        lambda: build_generator("unet_16", 1, 1),
    ):
        with pytest.raises(InputError, match="unknown"):
            call()
