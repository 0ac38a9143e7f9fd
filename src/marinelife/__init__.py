"""marinelife: photos of marine life in, a trained, evaluated, deployable classifier out."""

from marinelife._version import __version__

__all__ = ["__version__"]
