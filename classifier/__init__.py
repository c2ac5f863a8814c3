"""Image classifier: backbone, heads, checkpoints, prediction and explanations (pure ML, no SQL)."""
