"""One module per resource; each exposes `blp`, registered by create_app()."""
