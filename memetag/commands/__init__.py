"""CLI sub-commands: each module registers its parsers and wires arguments to library calls."""
