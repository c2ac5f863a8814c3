"""Bringing history in: streaming export parsers, the downloader, dedupe, and the ingest pipeline."""
