"""atoll: an image-based Debian OS toolkit for servers that run databases.

Layers (imports flow left to right; ``cli`` is never imported by the library)::

    core -> store -> compose -> delta -> repo -> deploy -> boot -> apps
         -> monitor -> agent -> fleet -> provision -> cli
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
