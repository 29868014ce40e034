"""Command-line interface: typer apps; the only place that prints (through rich)."""
