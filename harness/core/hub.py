"""Hugging Face objects from the local cache or a local folder only: nothing is downloaded."""
from __future__ import annotations

from typing import Any

from harness.core.errors import HarnessError


def from_local(loader: str, name: str, what: str) -> Any:
    """``transformers.<loader>.from_pretrained(name, local_files_only=True)``; a missing package
    or a model that is neither cached nor a folder is a HarnessError saying how to get it."""
    try:
        import transformers
    except ImportError:
        raise HarnessError(f"{what} needs `transformers`, which is not installed: pip install '.[text]'") from None
    try:
        return getattr(transformers, loader).from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{what} {name!r} is neither in the local cache nor a local folder ({exc}); fetch it "
                           f"once with {loader}.from_pretrained({name!r}) while online, or give the folder its "
                           "save_pretrained wrote") from None
