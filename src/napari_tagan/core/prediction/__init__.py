"""Prediction: confocal in, synthetic STED and segmentation out, for images of any size.

:func:`predict` (G, then S on its output) and :func:`segment` (S alone) are the public
calls, with :class:`RunOptions` for how to run them. The rooms: ``api`` (the calls and
their results), ``options`` (modes and execution settings), ``inputs`` (checking and
reading images), ``engine`` (the tiled runner) and ``budget`` (memory sizing).
"""

from __future__ import annotations

from .api import PredictionResult, predict, segment
from .options import MODES, Mode, RunOptions

__all__ = ["MODES", "Mode", "PredictionResult", "RunOptions", "predict", "segment"]
