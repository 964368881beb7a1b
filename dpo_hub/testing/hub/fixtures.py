"""pytest fixtures for the local hub.

Enable them in a ``conftest.py``::

    pytest_plugins = ["dpo_hub.testing.hub.fixtures"]

then::

    def test_push(local_hub, hub_env):
        subprocess.run([sys.executable, "push.py"], env=hub_env, check=True)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .launcher import LocalHub


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One hub server (fresh root) shared by the whole test session."""
    hub = LocalHub(tmp_path_factory.mktemp("dpo-hub-root"))
    hub.start()
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def hub_env(local_hub: LocalHub, tmp_path: Path) -> dict[str, str]:
    """Client environment (``HF_ENDPOINT``, write ``HF_TOKEN``, per-test ``HF_HOME``)."""
    return local_hub.client_env(hf_home=tmp_path / "hf-home")
