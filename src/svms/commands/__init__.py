"""The `svms` subcommands: tyro dataclasses whose fields are the flags and whose `run()` does the work."""
