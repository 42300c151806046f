"""DVC stages of the face-curation pipeline: one module per stage, run as `python -m stages.<name>`."""
