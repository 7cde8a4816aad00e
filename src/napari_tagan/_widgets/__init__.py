"""The napari widgets (Enhance, Annotate, Train) and their shared helpers.

Importing this package imports neither Qt nor torch; each widget module imports what it
needs when napari asks for the widget.
"""
