"""The one exception type the library raises for bad input."""


class EarlyBirdError(ValueError):
    """Bad input: a missing or corrupt file, wrong shapes, a bad parameter.

    The message names the file or parameter and what was expected, so the CLI can
    print it as one line without a traceback.
    """
