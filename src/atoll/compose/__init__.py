"""Compose: treefile -> Debian rootfs (mmdebstrap) -> atoll layout -> commit."""
