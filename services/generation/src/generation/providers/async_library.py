"""httpcore's "which async library runs me?", answered without an import search each time.

httpcore (1.0.9) asks with ``import sniffio`` on every request and pool event, and
falls back to asyncio when that fails. sniffio is not installed here (anyio 4.16 no
longer needs it), and a failed import is not remembered: each ask searched all of
``sys.path`` again. Profiled under the submit bench, those searches were ~10% of
generation's busy samples (the provider's create on every submission). A ``None``
entry in ``sys.modules`` is Python's own way to say "not importable": the import
then fails at once, with the same answer (asyncio) and no search.
"""

from __future__ import annotations

import importlib.util
import sys

_MODULE = "sniffio"


def settle_absent_sniffio() -> None:
    """Mark sniffio as not importable when it is not installed (a no-op when it is)."""
    if _MODULE not in sys.modules and importlib.util.find_spec(_MODULE) is None:
        sys.modules[_MODULE] = None  # type: ignore[assignment]  # the documented "absent" marker
