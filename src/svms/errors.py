"""The one exception type for errors a user can cause (paths, dataset fields, configs, checkpoints).

The CLI prints its message without a traceback and exits 1, so every message must say what was
wrong (the file, field or value) and how to fix it.
"""


class SvmsError(Exception):
    """A user-facing error: bad input, bad config, missing file. The message is the whole report."""
