import sys

from napari_tagan.cli import main

sys.exit(main())
