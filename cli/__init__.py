"""The `aimc` command line: wires the engine and training together (outside the engine layer)."""
