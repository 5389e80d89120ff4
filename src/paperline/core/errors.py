"""The one base class of errors a user can cause (bad config, missing data, failed gate, unreachable service).

The CLI prints such an error as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class PaperlineError(Exception):
    """An error whose message alone tells the user what is wrong and what to do."""
