"""Command groups of the CLI; each module exposes ``register(app: typer.Typer)``."""
