"""End-to-end tests of the offline Hugging Face Hub server (``dpo_hub.testing.hub``).

The server runs as a real subprocess; client code runs in subprocesses with ``HF_ENDPOINT``
pointing at it (``huggingface_hub`` reads it at import time), using the unmodified
``huggingface_hub``, ``transformers``, ``datasets`` and ``hf`` CLI. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpo_hub.testing.hub import LocalHub, Store, TokenRegistry, seed
from dpo_hub.testing.hub.app import find_route
from dpo_hub.testing.hub.storage import RepoRef

ALICE_TOKEN = "hf_alice_write"  # noqa: S105 - fake token for a local test server
PRELUDE = """
import json, os, sys
from huggingface_hub import HfApi
api = HfApi()
def out(**kw):
    print("RESULT " + json.dumps(kw, default=str), flush=True)
def err(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except Exception as e:
        resp = getattr(e, "response", None)
        return [type(e).__name__, getattr(resp, "status_code", None), str(e)]
    return None
"""


def tiny_model_files() -> dict[str, bytes]:
    """A 1-layer GPT-2 with a WordLevel tokenizer, serialised with ``save_pretrained``."""
    import tempfile

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "<|endoftext|>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token="<|endoftext|>",
    )
    config = transformers.GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        n_positions=32,
        vocab_size=len(vocab),
        bos_token_id=2,
        eos_token_id=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        transformers.GPT2LMHeadModel(config).save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def preference_files() -> dict[str, bytes]:
    """A small jsonl preference dataset."""
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    return {"data/train.jsonl": "\n".join(json.dumps(r) for r in rows).encode() + b"\n"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """Shared server, pre-seeded through the Python API with a tiny model and a dataset."""
    root = tmp_path_factory.mktemp("hub-root")
    entries = [
        ("model", "tester/tiny-gpt2", tiny_model_files()),
        ("dataset", "tester/prefs", preference_files()),
    ]
    assert len(seed(Store(root), entries)) == 2
    assert seed(Store(root), entries) == []  # idempotent
    tokens = {ALICE_TOKEN: {"user": "alice", "role": "write"}}
    with LocalHub(root, tokens=tokens) as server:
        yield server


def client(
    hub: LocalHub,
    code: str,
    home: Path,
    token: str | None = "hf_test_write",
    timeout: float = 120,
) -> dict[str, Any]:
    """Run ``code`` (after :data:`PRELUDE`) against ``hub``; returns the ``out(...)`` payload."""
    env = hub.client_env(token=token, hf_home=home)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"client failed:\n{proc.stderr[-4000:]}\n--- hub ---\n{hub.logs()}"
    results = [ln[len("RESULT ") :] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, proc.stdout + proc.stderr
    return json.loads(results[-1])


def http(url: str, method: str = "GET", token: str | None = None, **headers: str) -> tuple[int, Any, bytes]:
    """Plain urllib request (no huggingface_hub): returns ``(status, headers, body)``."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - local server
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# -- in-process unit checks (no server) ------------------------------------------------------------


def test_raw_path_routing_keeps_encoded_slashes() -> None:
    handler, params = find_route("GET", "/api/models/a/b/revision/refs%2Fpr%2F1") or (None, {})
    assert handler is not None and params["rev"] == "refs/pr/1"
    _, params = find_route("HEAD", "/datasets/a/b/resolve/feat%2Fx/data/train.jsonl") or (None, {})
    assert params == {
        "rtype": "datasets",
        "ns": "a",
        "name": "b",
        "rev": "feat/x",
        "path": "data/train.jsonl",
    }
    _, params = find_route("GET", "/a/b/resolve/main/sub/f%20g.txt") or (None, {})
    assert params["path"] == "sub/f g.txt" and "rtype" not in params
    assert find_route("GET", "/api/nothing/here") is None


def test_card_data_parsing_and_yaml_validation() -> None:
    from dpo_hub.testing.hub.util import parse_card_data, validate_card_yaml

    assert parse_card_data("---\ndate: 2024-01-01\ntags: [a]\n---\nbody") == {
        "date": "2024-01-01",
        "tags": ["a"],
    }
    assert validate_card_yaml("no metadata")[1] and validate_card_yaml("---\n- a\n---\n")[0]


def test_readme_fixtures_serve_a_real_client(local_hub: LocalHub, hub_env: dict[str, str]) -> None:
    """The README's ``local_hub``/``hub_env`` fixtures: a client subprocess pushes and reads back over
    HTTP."""
    code = """
    from huggingface_hub import HfApi, hf_hub_download
    api = HfApi()
    api.create_repo("tester/fixture-check", exist_ok=True)
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="tester/fixture-check")
    print(api.whoami()["name"], open(hf_hub_download("tester/fixture-check", "a.txt")).read())
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=hub_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["tester", "hello"]
    assert hub_env["HF_ENDPOINT"] == local_hub.url and local_hub.url.startswith("http://127.0.0.1:")
    assert (local_hub.root / "repos" / "models" / "tester" / "fixture-check").is_dir(), (
        "stored under the hub's root"
    )


def test_tokens_file_yaml_and_store_revisions(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  hf_bob: {user: bob, role: read, orgs: [acme]}\n")
    registry = TokenRegistry.from_file(path)
    assert registry.lookup("Bearer hf_bob").namespaces() == {"bob", "acme"}  # type: ignore[union-attr]
    assert registry.lookup("Bearer hf_test_write").can_write  # type: ignore[union-attr]
    store = Store(tmp_path / "root")
    ref = RepoRef("model", "tester/x")
    store.create_repo(ref, owner="tester")
    head = store.resolve(ref, "main")
    assert head is not None and store.resolve(ref, head[:8]) == head
    assert store.resolve(ref, "refs/heads/main") == head and store.resolve(ref, "nope") is None


# -- huggingface_hub client against the shared server ----------------------------------------------


def test_whoami_and_bad_token(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    me = api.whoami()
    ro = api.whoami(token="hf_test_read")
    bad = err(api.whoami, token="hf_wrong")
    out(me=me["name"], role=me["auth"]["accessToken"]["role"], ro=ro["auth"]["accessToken"]["role"], bad=bad)
    """
    res = client(hub, code, tmp_path)
    assert (res["me"], res["role"], res["ro"]) == ("tester", "write", "read")
    assert res["bad"][1] == 401
    status, headers, _ = http(f"{hub.url}/api/models/tester/tiny-gpt2", token="hf_wrong")
    assert status == 401 and headers["X-Error-Message"] == "Invalid credentials in Authorization header"


def test_create_upload_list_download(hub: LocalHub, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    code = f"""
    from huggingface_hub import hf_hub_download
    url = api.create_repo("tester/up")
    again = api.create_repo("tester/up", exist_ok=True)
    before = len(api.list_repo_commits("tester/up"))
    info = api.upload_folder(repo_id="tester/up", folder_path={str(folder)!r}, commit_message="add files")
    after = api.list_repo_commits("tester/up")
    path = hf_hub_download("tester/up", "sub/weights.bin")
    same = open(path, "rb").read() == open({str(folder / "sub" / "weights.bin")!r}, "rb").read()
    api.delete_file("config.json", repo_id="tester/up")
    api.create_repo("tester/doomed", repo_type="dataset")
    listed = [m.id for m in api.list_datasets(author="tester")]
    api.delete_repo("tester/doomed", repo_type="dataset")
    api.delete_repo("tester/doomed", repo_type="dataset", missing_ok=True)
    out(url=url, again=again, n=len(after) - before, head=after[0].commit_id, oid=info.oid,
        title=after[0].title, files=api.list_repo_files("tester/up"), same=same,
        exists=[api.file_exists("tester/up", "sub/weights.bin"), api.file_exists("tester/up", "config.json"),
                api.repo_exists("tester/up"), api.repo_exists("tester/missing")],
        sha=api.model_info("tester/up").sha, listed=listed,
        doomed=api.repo_exists("tester/doomed", repo_type="dataset"))
    """
    res = client(hub, code, tmp_path)
    assert res["url"] == res["again"] == f"{hub.url}/tester/up"
    assert res["n"] == 1 and res["head"] == res["oid"] and res["title"] == "add files"
    assert res["files"] == [".gitattributes", "sub/weights.bin"]
    assert res["same"] and res["exists"] == [True, False, True, False]
    assert res["sha"] != res["oid"]  # delete_file made a new commit
    assert res["listed"] == ["tester/doomed", "tester/prefs"] and res["doomed"] is False


def test_revisions_branch_tag_sha(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    import os
    from huggingface_hub import snapshot_download, hf_hub_download
    api.create_repo("tester/revs")
    v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id="tester/revs").oid
    api.create_tag("tester/revs", tag="v1.0", tag_message="first")
    api.create_branch("tester/revs", branch="feature/new-thing")
    api.upload_file(path_or_fileobj=b"branch", path_in_repo="f.txt", repo_id="tester/revs",
                    revision="feature/new-thing")
    api.upload_file(path_or_fileobj=b"main2", path_in_repo="f.txt", repo_id="tester/revs")
    read = lambda d: open(os.path.join(d, "f.txt")).read()
    api.create_branch("tester/revs", branch="tmp")
    api.delete_branch("tester/revs", branch="tmp")
    refs = api.list_repo_refs("tester/revs")
    out(branch=read(snapshot_download("tester/revs", revision="feature/new-thing")),
        tag=read(snapshot_download("tester/revs", revision="v1.0")),
        sha=read(snapshot_download("tester/revs", revision=v1)),
        main=open(hf_hub_download("tester/revs", "f.txt")).read(),
        branches=sorted(b.name for b in refs.branches), tags={t.name: t.target_commit for t in refs.tags},
        v1=v1, dup=err(api.create_branch, "tester/revs", branch="feature/new-thing"),
        missing=err(api.model_info, "tester/revs", revision="nope"),
        history=[c.title for c in api.list_repo_commits("tester/revs", revision="feature/new-thing")])
    """
    res = client(hub, code, tmp_path)
    assert (res["branch"], res["tag"], res["sha"], res["main"]) == ("branch", "v1", "v1", "main2")
    assert res["branches"] == ["feature/new-thing", "main"] and res["tags"] == {"v1.0": res["v1"]}
    assert res["dup"][1] == 409 and res["missing"][0] == "RevisionNotFoundError"
    assert res["history"] == ["Upload f.txt with huggingface_hub"] * 2 + ["initial commit"]


def test_parent_commit_conflict_and_pull_request(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    from huggingface_hub import CommitOperationAdd, hf_hub_download
    api.create_repo("tester/conflict")
    old = api.model_info("tester/conflict").sha
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/conflict")
    ops = [CommitOperationAdd("y.txt", b"y")]
    stale = err(api.create_commit, "tester/conflict", ops, commit_message="stale", parent_commit=old)
    head = api.model_info("tester/conflict").sha
    ok = api.create_commit("tester/conflict", [CommitOperationAdd("y.txt", b"y")], commit_message="fresh",
                           parent_commit=head)
    pr = api.create_commit("tester/conflict", [CommitOperationAdd("pr.txt", b"pr")], commit_message="pr",
                           create_pr=True)
    pr_file = open(hf_hub_download("tester/conflict", "pr.txt", revision=pr.pr_revision)).read()
    out(stale=stale, ok=ok.oid, pr=pr.pr_revision, pr_file=pr_file,
        main_files=api.list_repo_files("tester/conflict"))
    """
    res = client(hub, code, tmp_path)
    assert res["stale"][0] == "HfHubHTTPError" and res["stale"][1] == 412
    assert res["pr"] == "refs/pr/1" and res["pr_file"] == "pr"
    assert "pr.txt" not in res["main_files"] and "y.txt" in res["main_files"]


def test_permissions_read_only_and_foreign_namespace(hub: LocalHub, tmp_path: Path) -> None:
    code = f"""
    api.create_repo("alice/shared", token={ALICE_TOKEN!r})
    out(ro_push=err(api.upload_file, path_or_fileobj=b"x", path_in_repo="x", repo_id="tester/tiny-gpt2",
                    token="hf_test_read"),
        ro_create=err(api.create_repo, "tester/ro-new", token="hf_test_read"),
        foreign_push=err(api.upload_file, path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/shared"),
        foreign_create=err(api.create_repo, "alice/mine"),
        foreign_delete=err(api.delete_repo, "alice/shared"),
        readable=api.model_info("alice/shared").id)
    """
    res = client(hub, code, tmp_path)
    for key in ("ro_push", "ro_create", "foreign_push", "foreign_create", "foreign_delete"):
        assert res[key] is not None and res[key][1] == 403, (key, res[key])
    assert res["readable"] == "alice/shared"


def test_private_repo_visibility(hub: LocalHub, tmp_path: Path) -> None:
    code = f"""
    from huggingface_hub import hf_hub_download
    api.create_repo("alice/secret", private=True, token={ALICE_TOKEN!r})
    api.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id="alice/secret", token={ALICE_TOKEN!r})
    out(anon=err(api.model_info, "alice/secret", token=False),
        other=err(api.model_info, "alice/secret"),
        other_dl=err(hf_hub_download, "alice/secret", "s.txt"),
        exists=api.repo_exists("alice/secret"),
        owner=api.model_info("alice/secret", token={ALICE_TOKEN!r}).private,
        owner_dl=open(hf_hub_download("alice/secret", "s.txt", token={ALICE_TOKEN!r})).read())
    """
    res = client(hub, code, tmp_path)
    assert res["anon"][:2] == ["RepositoryNotFoundError", 401]
    assert res["other"][:2] == ["RepositoryNotFoundError", 404]
    assert res["other_dl"][0] == "RepositoryNotFoundError" and res["exists"] is False
    assert res["owner"] is True and res["owner_dl"] == "s"
    status, headers, _ = http(f"{hub.url}/alice/secret/resolve/main/s.txt")
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"


def test_model_card_roundtrip_and_yaml_validation(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    from huggingface_hub import ModelCard, ModelCardData
    api.create_repo("tester/carded")
    card = ModelCard.from_template(ModelCardData(license="mit", tags=["dpo", "tiny"]), model_description="Hi")
    card.push_to_hub("tester/carded")
    loaded = ModelCard.load("tester/carded")
    bad = err(api.upload_file, path_or_fileobj=b"---\\nlicense: [unclosed\\n---\\nx", \
path_in_repo="README.md",
              repo_id="tester/carded")
    info = api.model_info("tester/carded")
    out(license=loaded.data.license, tags=loaded.data.tags, card=info.card_data.to_dict(), bad=bad)
    """
    res = client(hub, code, tmp_path)
    assert res["license"] == "mit" and res["tags"] == ["dpo", "tiny"]
    assert res["card"]["license"] == "mit"
    assert res["bad"][0] == "ValueError" and "Invalid metadata" in res["bad"][2]


def test_raw_http_headers_range_and_unknown_route(hub: LocalHub) -> None:
    base = f"{hub.url}/datasets/tester/prefs/resolve/main/data/train.jsonl"
    status, headers, body = http(base, method="HEAD")
    full = preference_files()["data/train.jsonl"]
    assert status == 200 and int(headers["Content-Length"]) == len(full)
    assert headers["ETag"].startswith('"') and len(headers["X-Repo-Commit"]) == 40
    status, headers, body = http(base, Range="bytes=2-9")
    assert status == 206 and body == full[2:10]
    status, headers, body = http(base.replace("train.jsonl", "nope.jsonl"), method="HEAD")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    assert headers["Content-Length"] is not None and len(headers["X-Repo-Commit"]) == 40
    status, headers, body = http(f"{hub.url}/api/models/tester/tiny-gpt2/discussions")
    assert status == 404 and b"no route" in body


# -- transformers / datasets / CLI ------------------------------------------------------------------


def test_from_pretrained_tiny_model(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("tester/tiny-gpt2")
    tok = AutoTokenizer.from_pretrained("tester/tiny-gpt2")
    ids = tok("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    out(cls=type(model).__name__, ids=ids.tolist(), shape=list(logits.shape))
    """
    res = client(hub, code, tmp_path, token=None)
    assert res["cls"] == "GPT2LMHeadModel" and res["ids"] == [[3, 4]] and res["shape"] == [1, 2, 5]


def test_load_dataset_jsonl(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    import datasets
    ds = datasets.load_dataset("tester/prefs")
    out(splits=list(ds), n=ds["train"].num_rows, cols=ds["train"].column_names, first=ds["train"][0])
    """
    res = client(hub, code, tmp_path)
    assert res["splits"] == ["train"] and res["n"] == 6
    assert res["cols"] == ["prompt", "chosen", "rejected"] and res["first"]["chosen"] == "good 0"


def test_datasets_push_to_hub_goes_through_lfs(hub: LocalHub, tmp_path: Path) -> None:
    code = """
    import datasets
    ds = datasets.Dataset.from_dict({"prompt": ["a", "b", "c"], "chosen": ["x"] * 3, "rejected": ["y"] * 3})
    ds.push_to_hub("tester/pushed", private=True)
    back = datasets.load_dataset("tester/pushed")
    tree = api.list_repo_tree("tester/pushed", repo_type="dataset", recursive=True)
    files = {f.path: f for f in tree if type(f).__name__ == "RepoFile"}
    shards = [p for p in files if p.endswith(".parquet")]
    out(n=back["train"].num_rows, shards=shards, lfs=[files[p].lfs["size"] == files[p].size for p in shards],
        card="dataset_info" in open(api.hf_hub_download("tester/pushed", "README.md", \
repo_type="dataset")).read())
    """
    res = client(hub, code, tmp_path)
    assert res["n"] == 3 and res["shards"] == ["data/train-00000-of-00001.parquet"]
    assert res["lfs"] == [True] and res["card"] is True


def test_hf_cli_download(hub: LocalHub, tmp_path: Path) -> None:
    exe = shutil.which(
        "hf", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if exe is None:
        pytest.skip("hf CLI not installed")
    target = tmp_path / "dl"
    env = hub.client_env(hf_home=tmp_path / "hf")
    proc = subprocess.run(
        [exe, "download", "tester/prefs", "--repo-type", "dataset", "--local-dir", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (target / "data" / "train.jsonl").read_bytes() == preference_files()["data/train.jsonl"]


def test_seed_flag_with_embedded_assets(tmp_path: Path) -> None:
    from dpo_hub import embedded

    with LocalHub(tmp_path / "root", seed=True) as server:
        repos = [(t, r) for t, r, _ in embedded.hub_seed()]
        for repo_type, repo_id in repos:
            status, _, _ = http(f"{server.url}/api/{repo_type}s/{repo_id}")
            assert status == 200, (repo_type, repo_id)


# -- persistence and crash safety (dedicated servers) ------------------------------------------------


def test_restart_keeps_state_and_tree_pagination(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "root", tree_page_size=2)
    try:
        hub.start()
        code = """
        api.create_repo("tester/persist", repo_type="dataset", private=True)
        files = {f"d/{i}.txt": str(i).encode() for i in range(5)}
        from huggingface_hub import CommitOperationAdd
        ops = [CommitOperationAdd(p, c) for p, c in files.items()]
        sha = api.create_commit("tester/persist", ops, commit_message="five", repo_type="dataset").oid
        api.create_branch("tester/persist", branch="dev/a", repo_type="dataset")
        api.create_tag("tester/persist", tag="t1", repo_type="dataset")
        out(sha=sha, files=api.list_repo_files("tester/persist", repo_type="dataset"))
        """
        first = client(hub, code, tmp_path / "h1")
        assert len(first["files"]) == 6  # 5 files + .gitattributes, listed over 3+ tree pages
        hub.restart()
        code = """
        refs = api.list_repo_refs("tester/persist", repo_type="dataset")
        info = api.dataset_info("tester/persist")
        out(sha=info.sha, private=info.private, branches=sorted(b.name for b in refs.branches),
            tags=[t.name for t in refs.tags], files=api.list_repo_files("tester/persist", \
repo_type="dataset"))
        """
        second = client(hub, code, tmp_path / "h2")
        assert second["sha"] == first["sha"] and second["private"] is True
        assert second["branches"] == ["dev/a", "main"] and second["tags"] == ["t1"]
        assert second["files"] == first["files"]
    finally:
        hub.close()


def test_kill_during_commit_leaves_previous_commit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    hub = LocalHub(root, commit_delay=30.0)
    try:
        hub.start()
        ref = RepoRef("model", "tester/crash")
        Store(root).create_repo(ref, owner="tester")  # repo exists before the server caches anything
        commits_dir = root / "repos" / "models" / "tester" / "crash" / "commits"
        before = len(list(commits_dir.iterdir()))
        push = """
        import os
        api.upload_file(path_or_fileobj=os.urandom(6_000_000), path_in_repo="big.bin", repo_id="tester/crash")
        out(done=True)
        """
        env = hub.client_env(hf_home=tmp_path / "h1")
        proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(push)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while len(list(commits_dir.iterdir())) == before:  # commit object written, ref not yet
            assert time.monotonic() < deadline and proc.poll() is None, hub.logs()
            time.sleep(0.05)
        hub.kill()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode != 0, "upload should fail when the server dies"
        hub.commit_delay = 0.0
        hub.start()
        code = """
        files = api.list_repo_files("tester/crash")
        commits = [c.title for c in api.list_repo_commits("tester/crash")]
        sha = api.upload_file(path_or_fileobj=b"retry", path_in_repo="big.bin", repo_id="tester/crash").oid
        out(files=files, commits=commits, after=api.list_repo_files("tester/crash"),
            head=api.model_info("tester/crash").sha, sha=sha)
        """
        res = client(hub, code, tmp_path / "h2")
        assert res["files"] == [".gitattributes"] and res["commits"] == ["initial commit"]
        assert res["after"] == [".gitattributes", "big.bin"] and res["head"] == res["sha"]
    finally:
        hub.close()


def test_without_the_extra_the_server_says_how_to_install_it() -> None:
    code = "import sys; sys.modules['uvicorn'] = None\nimport dpo_hub\nimport dpo_hub.testing.hub"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "pip install 'dpo-hub[hub-server]'" in proc.stderr and "uvicorn" in proc.stderr.splitlines()[-1]
