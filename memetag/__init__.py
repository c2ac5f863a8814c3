"""memetag: the command line and configuration that tie store, ingest and classifier together."""

__version__ = "0.1.0"
