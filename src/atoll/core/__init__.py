"""Core: errors, the one subprocess gateway, canonical JSON, atomic writes, logging."""
