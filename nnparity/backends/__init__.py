"""Backend adapters and their registry."""
