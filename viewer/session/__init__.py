"""The reading state of the viewer, free of Qt: what the widgets render and the user changes."""
