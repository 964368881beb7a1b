"""Start/stop/kill the local hub as a subprocess from Python (tests, notebooks, CI scripts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .auth import DEFAULT_WRITE_TOKEN, TokenInfo
from .server import READY_PREFIX

# Directory holding the ``dpo_hub`` package (<dir>/dpo_hub/testing/hub/launcher.py -> <dir>).
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])


class LocalHub:
    """A local hub server running in a child process.

    Example::

        with LocalHub(tmp_path / "hub") as hub:
            subprocess.run([sys.executable, "client.py"], env=hub.client_env(hf_home=tmp_path / "hf"))

    ``tokens`` adds users: ``{"hf_alice": {"user": "alice", "role": "write", "orgs": ["acme"]}}``.
    ``upload_mode`` is ``auto``/``regular``/``lfs`` (see :mod:`dpo_hub.testing.hub.api_lfs`);
    :meth:`client_env` sets ``HF_HUB_DISABLE_XET=1`` so LFS uploads work. ``commit_delay`` (testing
    only) holds every commit between "written" and "published" for that many seconds.
    ``stop()`` terminates gracefully, ``kill()`` sends SIGKILL (to test crash safety) and
    ``start()`` again reuses the same root (and by default a fresh free port).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = False,
        tokens: Mapping[str, Mapping[str, Any] | TokenInfo] | None = None,
        tokens_file: str | Path | None = None,
        commit_delay: float = 0.0,
        tree_page_size: int | None = None,
        upload_mode: str | None = None,
        startup_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="dpo-hub-"))
        self.host = host
        self.port = port
        self.seed = seed
        self.commit_delay = commit_delay
        self.tree_page_size = tree_page_size
        self.upload_mode = upload_mode
        self.startup_timeout = startup_timeout
        self.python = python
        self.tokens_file = Path(tokens_file) if tokens_file is not None else None
        self._tokens_dir: str | None = None
        if tokens:
            self._tokens_dir = tempfile.mkdtemp(prefix="dpo-hub-tokens-")
            self.tokens_file = Path(self._tokens_dir) / "tokens.json"
            spec = {t: (_token_dict(i) if isinstance(i, TokenInfo) else dict(i)) for t, i in tokens.items()}
            self.tokens_file.write_text(json.dumps({"tokens": spec}))
        self.process: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self._lines: deque[str] = deque(maxlen=20_000)
        self._ready = threading.Event()
        self._pump_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def command(self, port: int | None = None) -> list[str]:
        """Command line used to start the server."""
        cmd = [
            self.python,
            "-m",
            "dpo_hub.testing.hub",
            "--host",
            self.host,
            "--root",
            str(self.root),
        ]
        cmd += ["--port", str(self.port if port is None else port)]
        if self.seed:
            cmd.append("--seed")
        if self.tokens_file is not None:
            cmd += ["--tokens", str(self.tokens_file)]
        if self.commit_delay:
            cmd += ["--commit-delay", str(self.commit_delay)]
        if self.tree_page_size:
            cmd += ["--tree-page-size", str(self.tree_page_size)]
        if self.upload_mode:
            cmd += ["--upload-mode", self.upload_mode]
        return cmd

    def start(self, port: int | None = None) -> str:
        """Start the server (``port`` overrides the constructor's) and return its URL."""
        if self.running:
            raise RuntimeError("local hub already running")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        self._lines, self._ready = deque(maxlen=20_000), threading.Event()
        self.process = subprocess.Popen(
            self.command(port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.process,), daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(self.startup_timeout) or self.url is None:
            self.kill()
            raise RuntimeError(f"local hub did not start:\n{self.logs()}")
        return self.url

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._lines.append(line)
            if line.startswith(READY_PREFIX) and not self._ready.is_set():
                self.url = line[len(READY_PREFIX) :].strip()
                self._ready.set()
        self._ready.set()  # process ended: unblock start()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate gracefully (SIGTERM), escalating to SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL the server immediately (no cleanup: simulates a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL on POSIX
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=5)  # the pipe hits EOF once the process is gone
            self._pump_thread = None
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def restart(self, port: int | None = None) -> str:
        """Stop (if running) and start again on the same root; returns the new URL."""
        self.stop()
        return self.start(port)

    def close(self) -> None:
        """Stop the server and remove temporary directories this object created."""
        self.stop()
        if self._tokens_dir:
            shutil.rmtree(self._tokens_dir, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalHub:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------
    def logs(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return "".join(self._lines)

    def client_env(
        self,
        token: str | None = DEFAULT_WRITE_TOKEN,
        hf_home: str | Path | None = None,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a client process talking to this hub (``HF_ENDPOINT``, ``HF_TOKEN``...).

        ``token=None`` removes ``HF_TOKEN`` (anonymous). ``hf_home`` isolates caches/tokens.
        """
        if self.url is None:
            raise RuntimeError("local hub not started")
        env = dict(os.environ if base is None else base)
        for key in (
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
        ):
            env.pop(key, None)
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_XET="1",
            HF_DATASETS_OFFLINE="0",
            NO_PROXY=",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        )
        if token is not None:
            env["HF_TOKEN"] = token
        if hf_home is not None:
            env["HF_HOME"] = str(hf_home)
        return env


def _token_dict(info: TokenInfo) -> dict[str, Any]:
    return {
        "user": info.user,
        "role": info.role,
        "orgs": list(info.orgs),
        "name": info.name,
    }


def run_local_hub(root: str | Path | None = None, **kwargs: Any) -> LocalHub:
    """Start a :class:`LocalHub` and return it (call ``.stop()``/``.close()`` when done)."""
    hub = LocalHub(root, **kwargs)
    hub.start()
    return hub
