"""A small Hugging Face Hub compatible HTTP server for offline tests.

Point the unmodified ``huggingface_hub`` client (or the ``hf`` CLI) at it with ``HF_ENDPOINT``::

    python -m dpo_hub.testing.hub --root /tmp/hub --port 0
    # -> dpo_hub local hub ready at http://127.0.0.1:PORT

or from Python/pytest::

    from dpo_hub.testing.hub import LocalHub

    with LocalHub(root) as hub:
        env = hub.client_env()          # HF_ENDPOINT, HF_TOKEN, ... for a client subprocess

Default user ``tester`` with tokens ``hf_test_write`` (write) and ``hf_test_read`` (read-only).
"""

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:  # the server is an extra: most installs never run it
    import sys

    _message = (
        f"the local Hub server needs the 'hub-server' extra ({err.name} is not installed): "
        "pip install 'dpo-hub[hub-server]' (the 'dev' extra includes it)"
    )
    # python -m dpo_hub.testing.hub: argv[0] is "-m" while the module is located; one line, no traceback
    if sys.argv[:1] == ["-m"] and any(
        a == __name__ or a.startswith(f"{__name__}.") for a in getattr(sys, "orig_argv", ())
    ):
        sys.exit(f"error: {_message}")
    raise ImportError(_message) from err

from .app import create_app  # noqa: E402
from .auth import (
    DEFAULT_READ_TOKEN,
    DEFAULT_USER,
    DEFAULT_WRITE_TOKEN,
    TokenInfo,
    TokenRegistry,
)
from .launcher import LocalHub, run_local_hub
from .seed import commit_files, seed
from .server import READY_PREFIX, serve
from .storage import Commit, RepoRef, Store

__all__ = [
    "DEFAULT_READ_TOKEN",
    "DEFAULT_USER",
    "DEFAULT_WRITE_TOKEN",
    "READY_PREFIX",
    "Commit",
    "LocalHub",
    "RepoRef",
    "Store",
    "TokenInfo",
    "TokenRegistry",
    "commit_files",
    "create_app",
    "run_local_hub",
    "seed",
    "serve",
]
