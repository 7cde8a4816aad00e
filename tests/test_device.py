"""The device policies: precision (training and prediction), memory format, placement."""

from __future__ import annotations

import warnings

import pytest
import torch

import napari_tagan.core.device as device_module
from napari_tagan.core.device import (
    AmpUnavailableWarning,
    Placement,
    autocast_dtype,
    dtype_name,
    prefers_channels_last,
)
from napari_tagan.core.errors import InputError

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", ["bf16", "auto"])
@pytest.mark.parametrize("hardware", [True, False])
def test_cpu_mixed_precision_only_with_bf16_hardware(monkeypatch, precision, hardware):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: hardware)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dtype = autocast_dtype(CPU, precision)
    assert dtype == (torch.bfloat16 if hardware else None)
    amp_warnings = [w for w in caught if issubclass(w.category, AmpUnavailableWarning)]
    assert len(amp_warnings) == (0 if hardware else 1)
    if amp_warnings:
        assert "running in fp32" in str(amp_warnings[0].message)


def test_fp32_is_none_and_fp16_needs_a_gpu():
    assert autocast_dtype(CPU, "fp32") is None
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        autocast_dtype(CPU, "fp16")
    with pytest.raises(InputError, match="unknown precision"):
        autocast_dtype(CPU, "fp8")


def test_dtype_names():
    assert (dtype_name(torch.bfloat16), dtype_name(torch.float16), dtype_name(None)) == (
        "bfloat16",
        "float16",
        None,
    )


@pytest.mark.parametrize(
    ("avx512", "amp", "expected"),
    [(False, None, False), (True, None, True), (False, torch.bfloat16, True)],
)
def test_memory_format_policy_on_the_cpu(monkeypatch, avx512, amp, expected):
    monkeypatch.setattr(device_module, "cpu_prefers_channels_last", lambda: avx512)
    assert prefers_channels_last(CPU, amp) is expected
    assert prefers_channels_last(torch.device("cuda"), None) is True


def test_placement_chooses_by_policy_unless_told(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(device_module, "cpu_prefers_channels_last", lambda: False)
    assert Placement.choose(CPU, amp=False) == Placement(CPU, None, torch.contiguous_format)
    assert Placement.choose(CPU, amp=True) == Placement(CPU, torch.bfloat16, torch.channels_last)
    told = Placement.choose(CPU, amp=True, channels_last=False)
    assert told.memory_format == torch.contiguous_format
    x = torch.ones(2, 2)
    with Placement.choose(CPU, amp=True).autocast():
        assert (x @ x).dtype == torch.bfloat16
    with Placement.choose(CPU, amp=False).autocast():
        assert (x @ x).dtype == torch.float32
