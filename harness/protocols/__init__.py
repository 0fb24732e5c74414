"""Built-in protocols: every module here registers itself when this package is imported."""
from harness.core.plugins import import_submodules

import_submodules(__name__, __path__)
