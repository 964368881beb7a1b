"""Run the local hub with uvicorn and announce readiness on stdout."""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from .api_lfs import UPLOAD_MODES
from .app import create_app
from .auth import TokenRegistry
from .seed import seed_embedded
from .storage import Store

READY_PREFIX = "dpo_hub local hub ready at "


class _AnnouncingServer(uvicorn.Server):
    """uvicorn server printing the ready line once it accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(f"{READY_PREFIX}{self.url}", flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    root: str | Path | None = None,
    *,
    seed: bool = False,
    tokens: TokenRegistry | None = None,
    commit_delay: float = 0.0,
    tree_page_size: int = 1000,
    upload_mode: str = "auto",
    log_level: str = "warning",
) -> None:
    """Serve a hub rooted at ``root`` (a fresh temp dir if ``None``) until interrupted.

    ``port=0`` picks a free port. Prints ``dpo_hub local hub ready at http://HOST:PORT`` when
    ready to accept requests. ``upload_mode``: ``auto``/``regular``/``lfs`` (see ``api_lfs``).
    """
    if root is None:
        root = tempfile.mkdtemp(prefix="dpo-hub-")
    store = Store(root, commit_delay=commit_delay)
    store.recover()
    if seed:
        seed_embedded(store)
    app = create_app(store, tokens=tokens, tree_page_size=tree_page_size, upload_mode=upload_mode)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level in ("info", "debug", "trace"),
        lifespan="off",
        timeout_keep_alive=30,
    )
    server = _AnnouncingServer(config, f"http://{url_host}:{bound_port}")
    server.run(sockets=[sock])


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m dpo_hub.testing.hub``."""
    parser = argparse.ArgumentParser(
        prog="python -m dpo_hub.testing.hub",
        description="Hugging Face Hub compatible server for offline tests (use with HF_ENDPOINT).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    parser.add_argument("--root", default=None, help="storage directory (default: a new temp dir)")
    parser.add_argument("--seed", action="store_true", help="host the embedded tiny model and dataset")
    parser.add_argument(
        "--tokens",
        default=None,
        help='JSON/YAML file: {"tokens": {"hf_x": {"user": ...}}}',
    )
    parser.add_argument("--commit-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--tree-page-size", type=int, default=1000, help="entries per /tree page")
    parser.add_argument(
        "--upload-mode",
        choices=UPLOAD_MODES,
        default="auto",
        help="regular: commit everything inline; lfs: Hub-like LFS uploads (clients need "
        "HF_HUB_DISABLE_XET=1); auto (default): lfs for the datasets library only",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    tokens = TokenRegistry.from_file(args.tokens) if args.tokens else TokenRegistry()
    try:
        serve(
            args.host,
            args.port,
            args.root,
            seed=args.seed,
            tokens=tokens,
            commit_delay=args.commit_delay,
            tree_page_size=args.tree_page_size,
            upload_mode=args.upload_mode,
            log_level=args.log_level,
        )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
