"""Built-in algorithms: one module each, imported by ``harness.core.registry.load_plugins`` (so that
a new one is one new file)."""
