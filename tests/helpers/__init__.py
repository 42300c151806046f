"""Helpers shared by the tests (and by bench/ scripts, which may import them; tests never import bench/)."""
