"""Reading and writing tensors in the checkpoint formats of the reference library."""
