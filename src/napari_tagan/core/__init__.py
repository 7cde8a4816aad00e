"""The headless TA-GAN engine: networks, configs, checkpoints, normalization, prediction.

Nothing here imports Qt, napari or magicgui (a test enforces it), so the CLI, scripts and
cluster jobs use the same code as the plugin. Names are imported on first use, so that
``napari_tagan.core.simulate`` (napari sample data) does not wait for torch. The public
names are listed once, in ``__init__.pyi``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
