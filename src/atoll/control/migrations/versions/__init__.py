"""One module per schema revision, applied in order (docs/control-plane.md)."""
