"""Model families, one file each, and the Auto classes that pick among them."""
