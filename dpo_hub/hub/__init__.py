"""Publishing and loading back: the model card, pushes and downloads with one-line errors, runs opened from a
folder or a repo, and adapters merged into their base."""
