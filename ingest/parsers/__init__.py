"""Pure, synchronous export parsers: bytes in, ParsedPost out. No network, no database."""
