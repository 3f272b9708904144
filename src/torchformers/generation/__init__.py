"""Text generation: configuration, logits processors, stopping criteria, streamers and decoding loops."""
