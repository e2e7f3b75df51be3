"""Outside text quoted in a message: short, printable, marked where it was cut."""
from __future__ import annotations


def quoted(text: str, limit: int = 60) -> str:
    """``text`` as a quoted literal of at most about ``limit`` characters, so a message
    that names what a person sent stays one short sentence however long that was.

    >>> quoted("psfhs2023"), quoted("n" * 500, 10), quoted("a\\x00b")
    ("'psfhs2023'", "'nnnnnnnnnn…' (500 characters)", "'a\\\\x00b'")
    """
    if len(text) <= limit:
        return repr(text)
    cut = repr(text[:limit])
    return f"{cut[:-1]}…{cut[-1]} ({len(text)} characters)"
