"""One module per pipeline stage, each exposing ``run(**typed_kwargs)``; importable and testable without DVC."""
