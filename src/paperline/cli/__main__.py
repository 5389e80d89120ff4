"""`python -m paperline.cli`: the same as the `paperline` command."""

from paperline.cli import entry_point

entry_point()
