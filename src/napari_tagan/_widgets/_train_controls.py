"""The Train panel's controls: what each one is called and says in its tooltip.

Plain names for a biologist, the engine's word in the tooltip; rarely changed settings in
the collapsed Advanced section.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from . import _train_settings as defaults
from ._common import advanced_section, device_choices, side_by_side
from ._jobs import PROGRESS_STEPS


class TrainControls:
    """The Train panel's controls (a mixin: the panel lays them out and connects them)."""

    _validation_choices: Any

    def _build_inputs(self) -> None:
        from napari_tagan.core.config import PRESET_NAMES

        self.sets = Container(labels=False, layout="vertical")
        self.add_set_button = PushButton(
            text="Add image set", tooltip="Train on one more field of view (another image pair)."
        )
        self.remove_set_button = PushButton(
            text="Remove last set", tooltip="Forget the last image set."
        )
        self.validation = ComboBox(
            label="check on",
            choices=self._validation_choices,
            tooltip="Hold one set out of training to measure how well the model does on "
            "images it has not seen (PSNR, SSIM and Dice: validation metrics).",
        )
        self.start = ComboBox(
            label="start from",
            choices=[("a preset (new model)", "preset"), ("a model file (fine-tune)", "file")],
            value="preset",
            tooltip="A new model for one of the paper's tasks, or a model you have, trained "
            "further on your images (fine-tuning).",
        )
        self.preset = ComboBox(
            label="preset",
            choices=list(PRESET_NAMES),
            value="axons",
            tooltip="The task: which structures, how images are scaled, the paper's "
            "network and training settings.",
        )
        self.model_path = FileEdit(
            label="model",
            mode="r",
            filter="Models (*.tagan *.pth);;All files (*)",
            enabled=False,
            tooltip="The model to fine-tune (.tagan, or an original TA-GAN .pth).",
        )
        self.from_enhance = PushButton(
            text="Use Enhance's model",
            enabled=False,
            tooltip="Fine-tune the model chosen in the Enhance panel.",
        )

    def _build_settings(self) -> None:
        self.iterations = SpinBox(
            label="iterations",
            min=1,
            max=1_000_000,
            tooltip="How long to train: one iteration learns from one batch of crops.",
        )
        self.batch_size = SpinBox(
            label="batch size",
            min=1,
            max=512,
            tooltip="Crops learned from at once; larger is smoother but slower.",
        )
        self.crop = SpinBox(
            label="crop size",
            min=0,
            max=4096,
            step=16,
            tooltip="Side in pixels of the random crops trained on (0: whole images).",
        )
        self.output = FileEdit(
            label="runs folder",
            mode="d",
            value=defaults.default_runs_folder(),
            tooltip="Each Train makes a new folder in here, named after the preset, data "
            "and time, with the model (latest.tagan) and the loss logs.",
        )
        self.estimate = Label(label="time", tooltip="Expected training time on this machine.")
        self._build_advanced()

    def _build_advanced(self) -> None:
        self.filters = SpinBox(
            label="network width",
            min=2,
            max=128,
            tooltip="Filters of a new model's networks (ngf = nsf = ndf): 64 as the paper; "
            "smaller trains much faster, with less detail.",
        )
        self.device = ComboBox(
            label="device",
            choices=device_choices(),
            value="auto",
            tooltip="Where to compute: auto takes the GPU when there is one.",
        )
        self.amp = CheckBox(
            label="",
            text="faster arithmetic (mixed precision)",
            value=False,
            tooltip="bf16/fp16 on a GPU, bf16 on CPUs with AMX or AVX512-BF16 (several times "
            "faster there); weights stay fp32. Elsewhere it is ignored, with a warning.",
        )
        self.seed = SpinBox(
            label="seed",
            min=0,
            max=2**31 - 1,
            value=0,
            tooltip="Starting point of the random numbers: the same seed and data give the "
            "same model.",
        )
        self.preview_every = SpinBox(
            label="preview",
            min=1,
            max=100_000,
            value=25,
            tooltip="Update the preview layer every this many iterations.",
        )
        self.validate_every = SpinBox(
            label="check",
            min=1,
            max=100_000,
            value=50,
            tooltip="Measure on the held-out set every this many iterations (validation).",
        )
        self.checkpoint_every = SpinBox(
            label="save",
            min=1,
            max=1_000_000,
            value=250,
            tooltip="Save the model every this many iterations (Stop saves it too).",
        )
        self.to_enhance = CheckBox(
            label="",
            text="load into Enhance when done",
            value=True,
            tooltip="Hand the trained model to the Enhance panel (opened if needed).",
        )
        every = side_by_side(
            self.preview_every, self.validate_every, self.checkpoint_every, label="every",
            labels=True,
        )  # fmt: skip
        self.advanced_toggle, self.advanced = advanced_section(
            self.filters, self.device, self.amp, self.seed, every, self.to_enhance
        )

    def _build_run_controls(self) -> None:
        self.train_button = PushButton(text="Train", tooltip="Start a new run in a new folder.")
        self.stop_button = PushButton(
            text="Stop", enabled=False, tooltip="Stop after this iteration; the model is saved."
        )
        self.resume_button = PushButton(
            text="Resume", tooltip="Continue the last run (stopped or finished) to its length."
        )
        self.progress = ProgressBar(
            label="progress", min=0, max=PROGRESS_STEPS, value=0, tooltip="Iterations done."
        )
        self.status = Label(
            label="", value="add image sets, then Train", tooltip="What happens now."
        )
        self.status.native.setWordWrap(True)
