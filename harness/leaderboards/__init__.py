"""Leaderboards: board definitions (``<name>.yaml``), their entries (``entries/<name>/``) and
rendered tables (``<name>.md``); the code that builds, verifies and renders them is ``board``."""
