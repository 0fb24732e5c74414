"""The one exception type that the CLI turns into a clear message and exit code 2."""


class HarnessError(Exception):
    """Bad input from the user: a config key, a name, a path. The message must say what is
    wrong and which values are accepted."""


def unknown(kind: str, name: object, accepted: "list[str] | tuple[str, ...]") -> HarnessError:
    """The message for a name that is not one of the accepted ones."""
    listed = ", ".join(str(a) for a in accepted) or "(none registered)"
    return HarnessError(f"unknown {kind} {name!r}; accepted: {listed}")
