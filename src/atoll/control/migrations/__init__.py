"""Alembic migrations of the control plane's schema (``atoll fleet db upgrade``)."""
