"""The one exception type that the CLI turns into a clear message and exit code 2."""
from __future__ import annotations

SHOWN_CHARS = 80  # the most of an echoed value a message shows
LINE_CHARS = 900  # the most of a message line the CLI prints (a last guard: values are cut by ``shown``)


class HarnessError(Exception):
    """Bad input from the user: a config key, a name, a path. The message must say what is
    wrong and which values are accepted."""


class RunDiverged(Exception):
    """A run whose training loss or predictions became non-finite (nan or inf): it stops as
    failed, never done. Not bad input as such, so the CLI exits 1, with this one line."""


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages echo untrusted input, which may be huge."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def unknown(kind: str, name: object, accepted: "list[str] | tuple[str, ...]") -> HarnessError:
    """The message for a name that is not one of the accepted ones."""
    listed = ", ".join(str(a) for a in accepted) or "(none registered)"
    if len(listed) > 4 * SHOWN_CHARS:
        listed = f"{listed[:4 * SHOWN_CHARS]}... ({len(accepted)} in all)"
    return HarnessError(f"unknown {kind} {shown(name)}; accepted: {listed}")


def brief(message: str) -> str:
    """Each line of ``message`` cut to LINE_CHARS characters, so that no echoed key or list
    (a name from a file, a list of accepted values) makes an error line longer than 1 kB."""
    return "\n".join(line if len(line) <= LINE_CHARS else f"{line[:LINE_CHARS]}... ({len(line)} characters)"
                     for line in message.splitlines() or [""])
