"""The one exception type the runner turns into a clean message and a non-zero exit."""


class RagtuneError(Exception):
    """A problem with the user's input or environment, stated in one paragraph with the fix.

    The runner prints it without a traceback and exits with status 2.
    """


def first_line(err: BaseException, limit: int | None = None) -> str:
    """An exception in one short line for a log or a message: its first line, else its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
