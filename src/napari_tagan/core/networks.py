"""TA-GAN network definitions.

The modules keep the layer order of the original TA-GAN / pix2pix networks, because the
original checkpoints are bare ``state_dict``s whose keys encode positions inside
``nn.Sequential`` containers (``model.10.conv_block.6.weight``...). Every index below is
therefore part of the file format: moving a layer breaks checkpoint compatibility.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from .errors import InputError

NormName = Literal["batch", "instance", "none"]
# Static names for the typed config; they must list what :data:`ARCHS` registers per role.
GeneratorName = Literal["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"]
SegmenterName = Literal["resnet_6blocks", "unet_128", "unet_32"]
DiscriminatorName = Literal["basic", "n_layers", "pixel"]
InitName = Literal["normal", "xavier", "kaiming", "orthogonal"]


def _norm(norm: NormName, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise InputError(f"norm must be 'batch', 'instance' or 'none', got {norm!r}")


def _conv_bias(norm: NormName) -> bool:
    # The original gives convolutions a bias only with instance norm: with batch norm the
    # norm's shift replaces it, and with no norm the original's rule also says "no bias".
    return norm == "instance"


class ResnetBlock(nn.Module):
    """Residual block: pad, conv, norm, ReLU, [dropout], pad, conv, norm; plus identity.

    Generator blocks always hold a Dropout layer (p = 0 when dropout is off) so that the
    second convolution sits at ``conv_block.6``; segmenter blocks have none
    (``conv_block.5``).
    """

    def __init__(self, dim: int, norm: NormName, *, dropout: float | None, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            _norm(norm, dim),
            nn.ReLU(True),
        ]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            _norm(norm, dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Encoder (2 stride-2 convs), ``n_blocks`` residual blocks, decoder, Tanh.

    Used both as generator (``block_dropout`` is a float, possibly 0) and as segmenter
    (``block_dropout=None``: no Dropout layer in the blocks).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: NormName = "batch",
        n_blocks: int = 9,
        block_dropout: float | None = 0.5,
    ) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                _norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [
            ResnetBlock(ngf * 4, norm, dropout=block_dropout, bias=bias) for _ in range(n_blocks)
        ]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult,
                    ngf * mult // 2,
                    3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=bias,
                ),
                _norm(norm, ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetSkipBlock(nn.Module):
    """One U-Net level: down-conv, the inner levels, up-conv; concatenated with its input.

    The activations are in-place as in the original: the LeakyReLU of a level rewrites
    its input, so the skip connection carries the activated tensor. Checkpoints were
    trained with that behaviour, so it is kept.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: NormName = "batch",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = _conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, uprelu, upconv, _norm(norm, outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [
                downrelu,
                downconv,
                _norm(norm, inner_nc),
                submodule,
                uprelu,
                upconv,
                _norm(norm, outer_nc),
            ]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        y = self.model(x)  # rewrites x in place through the first LeakyReLU
        return torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 levels (input sides must be multiples of 2**n)."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: NormName = "batch",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise InputError(f"a U-Net needs at least 5 levels, got {num_downs}")
        block = UnetSkipBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        block = UnetSkipBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 convs, one stride-1 conv, a 1-channel patch map.

    ``n_layers=3`` is the original's ``basic`` 70×70 PatchGAN.
    """

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: NormName = "batch"
    ) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                _norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
            _norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1×1 PatchGAN: classifies each pixel independently."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: NormName = "batch") -> None:
        super().__init__()
        bias = _conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias),
            _norm(norm, ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


Role = Literal["generator", "segmenter", "discriminator"]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: how to build it for each role it can play, and how it tiles."""

    name: str
    #: Inputs must be multiples of it (the total down-sampling factor).
    stride: int
    #: Finite receptive field: tiles with a large enough halo are exact (else blended).
    local: bool
    #: Constructor per role. G: ``(input_nc, output_nc, width, norm, dropout)``;
    #: S: ``(input_nc, output_nc, width, norm)``; D: ``(input_nc, width, norm, n_layers)``.
    builders: Mapping[str, Callable[..., nn.Module]]

    @property
    def roles(self) -> frozenset[str]:
        """The roles (``generator``, ``segmenter``, ``discriminator``) it can play."""
        return frozenset(self.builders)


def _resnet(n_blocks: int) -> Mapping[str, Callable[..., nn.Module]]:
    return {
        "generator": lambda i, o, w, norm, dropout: ResnetGenerator(
            i, o, w, norm, n_blocks, 0.5 if dropout else 0.0
        ),
        # Segmenter blocks hold no Dropout layer (the original's layout).
        "segmenter": lambda i, o, w, norm: ResnetGenerator(i, o, w, norm, n_blocks, None),
    }


def _unet(downs: int) -> Mapping[str, Callable[..., nn.Module]]:
    return {
        "generator": lambda i, o, w, norm, dropout: UnetGenerator(i, o, downs, w, norm, dropout),
        "segmenter": lambda i, o, w, norm: UnetGenerator(i, o, downs, w, norm, dropout=False),
    }


def _only(
    builders: Mapping[str, Callable[..., nn.Module]], role: str
) -> Mapping[str, Callable[..., nn.Module]]:
    return {role: builders[role]}


#: Every architecture by name (like torchvision's model registry): adding a network is an
#: entry here and its name in the matching ``*Name`` literal above (a test checks both).
ARCHS: dict[str, ArchSpec] = {
    "resnet_9blocks": ArchSpec("resnet_9blocks", 4, True, _only(_resnet(9), "generator")),
    "resnet_6blocks": ArchSpec("resnet_6blocks", 4, True, _resnet(6)),
    "unet_32": ArchSpec("unet_32", 32, False, _only(_unet(5), "segmenter")),
    "unet_128": ArchSpec("unet_128", 128, False, _unet(7)),
    "unet_256": ArchSpec("unet_256", 256, False, _only(_unet(8), "generator")),
    "basic": ArchSpec(
        "basic",
        1,
        True,
        {"discriminator": lambda i, w, norm, n: NLayerDiscriminator(i, w, 3, norm)},
    ),
    "n_layers": ArchSpec(
        "n_layers",
        1,
        True,
        {"discriminator": lambda i, w, norm, n: NLayerDiscriminator(i, w, n, norm)},
    ),
    "pixel": ArchSpec(
        "pixel", 1, True, {"discriminator": lambda i, w, norm, n: PixelDiscriminator(i, w, norm)}
    ),
}

#: The names each role accepts, from the registry.
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    role: tuple(n for n, spec in ARCHS.items() if role in spec.roles) for role in get_args(Role)
}

#: Down-sampling factor of each generator/segmenter architecture (derived from
#: :data:`ARCHS`; kept for callers not yet switched to :func:`stride_multiple`).
ARCH_STRIDE: dict[str, int] = {
    n: spec.stride for n, spec in ARCHS.items() if spec.roles & {"generator", "segmenter"}
}


def arch_spec(name: str, role: str | None = None) -> ArchSpec:
    """The registered architecture ``name`` (able to play ``role``); unknown: InputError."""
    spec = ARCHS.get(name)
    if spec is None or (role is not None and role not in spec.roles):
        what = role or "architecture"
        names = ROLE_NAMES[role] if role in ROLE_NAMES else tuple(ARCHS)
        raise InputError(f"unknown {what} {name!r}; expected one of {', '.join(names)}")
    return spec


def stride_multiple(*archs: str | None) -> int:
    """Side lengths that networks ``archs`` all accept: multiples of their largest stride.

    None entries (no segmenter) are skipped.
    """
    return max((arch_spec(a).stride for a in archs if a is not None), default=1)


def build_generator(
    arch: GeneratorName,
    input_nc: int,
    output_nc: int,
    ngf: int = 64,
    norm: NormName = "batch",
    dropout: bool = True,
) -> nn.Module:
    """Build a generator with the original layout (see the module docstring)."""
    return arch_spec(arch, "generator").builders["generator"](
        input_nc, output_nc, ngf, norm, dropout
    )


def build_segmenter(
    arch: SegmenterName, input_nc: int, output_nc: int, nsf: int = 64, norm: NormName = "batch"
) -> nn.Module:
    """Build a segmenter: like a generator, but its residual blocks hold no Dropout."""
    return arch_spec(arch, "segmenter").builders["segmenter"](input_nc, output_nc, nsf, norm)


def build_discriminator(
    arch: DiscriminatorName,
    input_nc: int,
    ndf: int = 64,
    norm: NormName = "batch",
    n_layers: int = 3,
) -> nn.Module:
    """Build a discriminator; ``input_nc`` is confocal + STED channels (conditional D)."""
    return arch_spec(arch, "discriminator").builders["discriminator"](
        input_nc, ndf, norm, n_layers
    )


def init_weights(net: nn.Module, init_type: InitName = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise weights as the original: conv/linear by ``init_type``, BN weight ~ N(1, gain)."""

    def init_one(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=gain)
            else:
                raise InputError(
                    f"unknown init {init_type!r}; expected normal, xavier, kaiming or orthogonal"
                )
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init_one)
    return net
