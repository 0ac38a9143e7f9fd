"""marinelife: turn a folder of marine-life photos into a trained, evaluated, deployable classifier."""

__version__ = "0.1.0"
