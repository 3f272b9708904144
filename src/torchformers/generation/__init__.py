"""Text generation: configuration and decoding."""
