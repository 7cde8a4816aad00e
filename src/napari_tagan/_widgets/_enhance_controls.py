"""The Enhance panel's controls: what each one is called and says in its tooltip.

Plain names for a biologist, the engine's word in the tooltip; rarely changed settings in
the collapsed Advanced section.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, FileEdit, Label, ProgressBar, PushButton, SpinBox

from ._common import advanced_section, device_choices
from ._jobs import PROGRESS_STEPS

MODE_CHOICES = [
    ("one result (deterministic)", "eval"),
    ("N generations: variability (dropout)", "mc"),
    ("as the original code (batch statistics)", "original"),
]
SEGMENTATION_CHOICES = [
    ("labels", "labels"),
    ("probabilities", "probabilities"),
    ("none", "none"),
]
SCOPE_CHOICES = [("current plane", "plane"), ("whole stack", "stack")]
PRECISION_CHOICES = [
    ("exact (fp32)", "fp32"),
    ("faster, mixed (bf16)", "bf16"),
    ("faster, mixed, GPU (fp16)", "fp16"),
]


class EnhanceControls:
    """The Enhance panel's controls (a mixin: the panel lays them out and connects them)."""

    _image_choices: Any
    _recent_choices: Any

    def _build_model_controls(self) -> None:
        from napari_tagan.core.config import PRESET_NAMES

        self.image = ComboBox(
            label="confocal",
            choices=self._image_choices,
            nullable=False,
            tooltip="The image to enhance (confocal, or brightfield for S. aureus).",
        )
        self.recent_box = ComboBox(
            label="recent",
            choices=self._recent_choices,
            nullable=True,
            tooltip="Models used or trained lately; pick one to use it again.",
        )
        self.model_path = FileEdit(
            label="model",
            mode="r",
            filter="Models (*.tagan *.pth);;All files (*)",
            tooltip="A trained model: a .tagan file, or an original TA-GAN .pth file.",
        )
        self.folder_button = PushButton(
            text="Checkpoint folder…",
            tooltip="Use an original TA-GAN checkpoint folder (with *_net_G.pth files).",
        )
        self.epoch = ComboBox(
            label="epoch",
            choices=["auto"],
            value="auto",
            enabled=False,
            tooltip="Which saved epoch of an original checkpoint folder (auto: the latest).",
        )
        self.preset = ComboBox(
            label="preset",
            choices=["auto", *PRESET_NAMES],
            value="auto",
            tooltip="The task the model was trained for; auto reads it from the model "
            "(original .pth files need it).",
        )
        self._build_options()

    def _build_options(self) -> None:
        self.mode = ComboBox(
            label="mode",
            choices=MODE_CHOICES,
            value="eval",
            tooltip="One result; or several (generations) with dropout on, whose spread "
            "shows where the model is unsure (variability); or the original code's "
            "default test mode (batch statistics).",
        )
        self.generations = SpinBox(
            label="generations",
            min=2,
            max=256,
            value=8,
            enabled=False,
            tooltip="How many results to average (and measure the spread of).",
        )
        self.scope = ComboBox(
            label="planes",
            choices=SCOPE_CHOICES,
            value="plane",
            tooltip="Enhance the plane shown, or every plane of a stack.",
        )
        self.segmentation = ComboBox(
            label="segmentation",
            choices=SEGMENTATION_CHOICES,
            value="labels",
            tooltip="Structures found by the model: as Labels, as probability maps, or none.",
        )

    def _build_run_controls(self) -> None:
        self.device = ComboBox(
            label="device",
            choices=device_choices(),
            value="auto",
            tooltip="Where to compute: auto takes the GPU when there is one.",
        )
        self.tile = SpinBox(
            label="tile size",
            min=0,
            max=16384,
            step=64,
            value=0,
            tooltip="Large images are enhanced in tiles of this side (pixels), seamlessly; "
            "0 chooses from the free memory.",
        )
        self.precision = ComboBox(
            label="arithmetic",
            choices=PRECISION_CHOICES,
            value="fp32",
            tooltip="fp32: exact. bf16/fp16: mixed precision, faster on GPUs (bf16 also on "
            "CPUs with AMX or AVX512-BF16), within about 1 % of the output range of fp32.",
        )
        self.seed = SpinBox(
            label="seed",
            min=0,
            max=2**31 - 1,
            value=0,
            tooltip="Starting point of the random dropout: the same seed gives the same "
            "generations.",
        )
        self.advanced_toggle, self.advanced = advanced_section(
            self.device, self.tile, self.precision, self.seed
        )
        self.run_button = PushButton(text="Enhance", tooltip="Compute the results.")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop at the next tile or plane."
        )
        self.save_button = PushButton(
            text="Save results…",
            enabled=False,
            tooltip="Save the last results as TIFFs in a folder, with pixel size, classes "
            "and how they were made.",
        )
        self.progress = ProgressBar(
            label="progress", min=0, max=PROGRESS_STEPS, value=0, tooltip="Work done."
        )
        self.status = Label(label="", value="choose a model", tooltip="What happens now.")
        self.status.native.setWordWrap(True)
