"""marinelife: photos of marine life in, a trained, evaluated, deployable classifier out."""

__version__ = "0.1.0"
