"""How errors are reported: one line, naming what went wrong.

Every user-facing error in the library, the CLI and the executors is shown as the first
line of its message. This module is the one place that turns an exception into that line.
"""

from __future__ import annotations


def first_line(error: BaseException | str, *, with_type: bool = False, limit: int = 300) -> str:
    """The first non-empty line of an error's message, for a one-line report.

    Args:
      error: an exception, or a message string.
      with_type: prefix the exception's class name (``"ValueError: ..."``), as a report
        from another process needs, where the type is otherwise lost.
      limit: the longest line returned, in characters.

    Returns:
      The line; the exception's class name when its message is empty.

    Example:
        >>> first_line(ValueError("bad value 'x'\\nmore detail"))
        "bad value 'x'"
        >>> first_line(KeyError("arch"), with_type=True)
        "KeyError: 'arch'"
    """
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else ""
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    if with_type and name and line:
        line = f"{name}: {line}"
    return (line or name)[:limit]
