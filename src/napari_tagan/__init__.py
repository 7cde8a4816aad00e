"""napari-tagan: TA-GAN confocal-to-STED enhancement, headless and in napari.

The package root imports nothing heavy, so that napari's start-up and drag-and-drop never
wait for torch. The engine lives in :mod:`napari_tagan.core`.
"""

__version__ = "0.1.0"
