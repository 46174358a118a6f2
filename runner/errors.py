"""The one exception type the runner turns into a clean message and a non-zero exit."""


class RagtuneError(Exception):
    """A problem with the user's input or environment, stated in one paragraph with the fix.

    The runner prints it without a traceback and exits with status 2.
    """
