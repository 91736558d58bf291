"""The one exception type for bad user input; the CLIs turn it into a single line and exit 2."""


class TLError(Exception):
    """A problem with the user's input (data, search space, options), not a bug."""
