"""The release number, in a module of its own so low layers can read it without the package API."""

__version__ = "0.1.0"
