"""The Qt widgets of the viewer: they render the reading session and forward the user's intent."""
