"""Command-line entry points. Each module builds its parser cheaply and imports heavy code in run()."""
