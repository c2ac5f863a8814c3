"""What the CLI and the bot both do: store live images, train, pick and explain models."""
