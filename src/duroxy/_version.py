"""duroxy's version, in a module of its own so that every layer may read it (the
runtime records it in its heartbeat) without importing the package's facade."""

__version__ = "0.2.0"
