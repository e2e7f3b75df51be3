"""The `iugc` command line: composes every package's commands (the top application layer)."""
