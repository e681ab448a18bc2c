"""GRUB environment blocks (``/boot/grub/grubenv``): parse and render.

The format GRUB's ``load_env``/``save_env`` use: exactly 1024 bytes, a header
line ``# GRUB Environment Block``, ``key=value`` lines, padded with ``#``.
GRUB rewrites the file's blocks in place, so its size must never change.
"""

from __future__ import annotations

from collections.abc import Mapping

from atoll.core.errors import HostStateError, InputError

__all__ = ["ENV_SIZE", "HEADER", "parse", "render"]

ENV_SIZE = 1024
HEADER = b"# GRUB Environment Block\n"


def parse(data: bytes) -> dict[str, str]:
    """Parse a grubenv block into a dict.

    Raises:
        HostStateError: the block is not a GRUB environment block.
    """
    if not data.startswith(HEADER):
        raise HostStateError(
            "grubenv is not a GRUB environment block",
            details=f"first bytes: {data[:32]!r}",
            resolution="rewrite it with `grub-editenv FILE create` or rebuild the image",
        )
    env: dict[str, str] = {}
    for raw in data[len(HEADER):].split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return env


def render(env: Mapping[str, str]) -> bytes:
    """Render ``env`` as a 1024-byte grubenv block (keys sorted).

    Raises:
        InputError: a key or value cannot be stored, or the block would overflow.
    """
    body = bytearray(HEADER)
    for key in sorted(env):
        value = env[key]
        if not key or "=" in key or "\n" in key or not key.isascii():
            raise InputError(f"invalid grubenv key {key!r}")
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
        body += f"{key}={escaped}\n".encode()
    if len(body) > ENV_SIZE:
        raise InputError(
            f"grubenv overflow: {len(body)} bytes > {ENV_SIZE}",
            resolution="fewer or shorter variables",
        )
    return bytes(body) + b"#" * (ENV_SIZE - len(body))
