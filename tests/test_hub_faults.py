"""Hub faults over real HTTP against the local Hub: bad inputs, a Hub that dies mid-push, no-op re-pushes,
concurrent pushes and pulls, and tokens that must never leak. The client is the unmodified huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import offline_env, run
from huggingface_hub import HfApi

from dpo_hub.testing.hub import LocalHub, RepoRef, Store

WRITE, READ, BAD = "hf_test_write", "hf_test_read", "hf_not_a_real_token_1234567890"
SECRETS = (WRITE, READ, BAD)
PRELUDE = """
import json, logging, os, sys, traceback
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
def out(**kw):
    print("RESULT " + json.dumps(kw, default=str), flush=True)
def error(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except Exception as e:
        return {"type": type(e).__name__, "hub": type(e).__name__ == "HubError", "msg": str(e),
                "chain": repr(e.__cause__), "tb": traceback.format_exc()}
    return {"type": None, "hub": False, "msg": "no error", "chain": "", "tb": ""}
"""


# -- fixtures and helpers ------------------------------------------------------------------------
TRAIN = """
import sys
from dpo_hub import train
from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE
train(RECIPE.override({"model": "embedded", "data.dataset": "embedded", "data.limit": 24, "dpo.max_steps": 2,
                       "data.eval_fraction": 0.25}), sys.argv[1])
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny finished run, trained once for the module (offline, in a child process)."""
    tmp = tmp_path_factory.mktemp("faults")
    proc = run([sys.executable, "-c", TRAIN, str(tmp / "run")], offline_env(tmp), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def variants(run_dir, tmp_path_factory) -> list[Path]:
    """Six distinct runs: different adapter weights (LFS) and generations.md (a regular file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("variants")
    weights = run_dir / "adapter_model.safetensors"
    with safe_open(weights, "pt") as handle:
        metadata = handle.metadata()
    out = []
    for k in range(6):
        folder = root / f"v{k}"
        shutil.copytree(run_dir, folder)
        save_file(
            {n: t + (k + 1) * 1e-3 for n, t in load_file(weights).items()}, folder / weights.name, metadata
        )
        (folder / "generations.md").write_text(f"variant {k}\n")
        out.append(folder)
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        yield server


def api(hub: LocalHub, token: str = WRITE) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def client(
    hub: LocalHub,
    code: str,
    tmp: Path,
    token: str | None = WRITE,
    args=(),
    env=None,
    check: bool = True,
    timeout: int = 300,
) -> dict:
    """Run ``code`` in a fresh Python against ``hub``; its last RESULT line as a dict (plus _stdout,
    _stderr)."""
    env = env or hub.client_env(token=token, hf_home=tmp / "hf_home")
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return {
        **(json.loads(lines[-1][7:]) if lines else {}),
        "_stdout": proc.stdout,
        "_stderr": proc.stderr,
        "_rc": proc.returncode,
    }


def state(hub: LocalHub) -> dict[str, tuple[str, int]]:
    """Every repo the write token can see -> (head sha, number of commits)."""
    hf = api(hub)
    return {m.id: (hf.model_info(m.id).sha, len(hf.list_repo_commits(m.id))) for m in hf.list_models()}


def sha256s(folder: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def remote_sha256s(hub: LocalHub, repo_id: str, tmp: Path, revision: str | None = None) -> dict[str, str]:
    """sha256 of every file of ``repo_id`` as downloaded over HTTP."""
    hf = api(hub)
    files = hf.list_repo_files(repo_id, revision=revision)
    return {
        f: hashlib.sha256(
            Path(hf.hf_hub_download(repo_id, f, revision=revision, cache_dir=tmp / "dl")).read_bytes()
        ).hexdigest()
        for f in files
        if f != ".gitattributes"
    }


def expected_sha256s(run: Path, repo_id: str) -> dict[str, str]:
    """What a push of ``run`` to ``repo_id`` must publish: the run's files and the card built for that
    repo."""
    from dpo_hub import build_card
    from dpo_hub.hub.transfer import PUBLISHED

    found = sha256s(run, [n for n in PUBLISHED if (run / n).is_file()])
    return {**found, "README.md": hashlib.sha256(str(build_card(run, repo_id)).encode()).hexdigest()}


def dead_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- bad inputs ----------------------------------------------------------------------------------
SETUP = """
from huggingface_hub import HfApi
from safetensors.torch import save
import torch
hf = HfApi()
def repo(name, files):
    hf.create_repo(name, exist_ok=True)
    for path, data in files.items():
        hf.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=name)
cfg = json.dumps({"base_model_name_or_path": "embedded", "peft_type": "LORA", "task_type": "CAUSAL_LM",
                  "r": 2, "lora_alpha": 4, "target_modules": ["c_attn"]}).encode()
repo("tester/card-only", {"README.md": b"---\\nlicense: mit\\n---\\nno adapter here\\n"})
repo("tester/pickled", {"adapter_model.bin": b"not really a pickle", "adapter_config.json": cfg})
repo("tester/mismatch", {"adapter_config.json": cfg, "adapter_model.safetensors": save({"x": torch.zeros(1)}),
                         "README.md": b"---\\nbase_model: gpt2\\n---\\n"})
repo("tester/corrupt", {"adapter_config.json": cfg, "adapter_model.safetensors": b"\\x10\\x00garbage, \
not tensors"})
repo("tester/bad-config", {"adapter_config.json": b"{not json", \
"adapter_model.safetensors": save({"x": torch.zeros(1)})})
hf.create_repo("tester/hidden", private=True)
from dpo_hub import push_adapter
push_adapter(sys.argv[1], "tester/good")
"""

# name -> (python call, substrings the HubError message must contain). ``RUN`` is the run folder.
API_CASES = {
    "push_malformed_id": ("push_adapter(RUN, 'bad repo!!')", ["'bad repo!!'", "not a valid Hub repo id"]),
    "push_too_many_parts": ("push_adapter(RUN, 'tester/a/b')", ["'tester/a/b'", "namespace/name"]),
    "pull_malformed_id": ("pull_adapter('-tester/x')", ["'-tester/x'", "not a valid"]),
    "compare_malformed_id": (
        "compare_run('tester/bad..name', prompts=[])",
        ["'tester/bad..name'", "not a valid"],
    ),
    "pull_missing_repo": ("pull_adapter('tester/nope')", ["tester/nope", "no such repo", "check the id"]),
    "compare_missing_repo": ("compare_run('tester/nope', prompts=[])", ["tester/nope", "no such repo"]),
    "pull_private_repo_without_access": (
        "with_token(None, pull_adapter, 'tester/hidden')",
        ["tester/hidden", "private", "hf auth login"],
    ),
    "pull_missing_revision": (
        "pull_adapter('tester/good', revision='no-such-branch')",
        ["tester/good", "'no-such-branch'", "does not exist"],
    ),
    "compare_missing_revision": (
        "compare_run('tester/good', prompts=[], revision='v9')",
        ["tester/good", "'v9'", "does not exist"],
    ),
    "pull_no_adapter": (
        "pull_adapter('tester/card-only')",
        ["tester/card-only", "no adapter", "dpo-hub push"],
    ),
    "pull_pickle_only": ("pull_adapter('tester/pickled')", ["tester/pickled", "pickle", "adapter_model.bin"]),
    "pull_card_mismatch": (
        "pull_adapter('tester/mismatch')",
        ["tester/mismatch", "'gpt2'", "does not match"],
    ),
    "pull_corrupt_safetensors": (
        "pull_adapter('tester/corrupt')",
        ["tester/corrupt", "adapter_model.safetensors", "corrupt", "push the run again"],
    ),
    "compare_corrupt_safetensors": (
        "compare_run('tester/corrupt', prompts=[])",
        ["tester/corrupt", "adapter_model.safetensors cannot be read"],
    ),
    "pull_bad_adapter_config": (
        "pull_adapter('tester/bad-config')",
        ["tester/bad-config", "adapter_config.json"],
    ),
    "push_no_token": (
        "with_token(None, push_adapter, RUN, 'tester/new-a')",
        ["tester/new-a", "no Hugging Face token"],
    ),
    "push_invalid_token": (
        f"push_adapter(RUN, 'tester/new-b', token='{BAD}')",
        ["tester/new-b", "rejected the token", "HF_TOKEN"],
    ),
    "push_read_only_token": (
        f"push_adapter(RUN, 'tester/good', token='{READ}')",
        ["tester/good", "read-only", "write access"],
    ),
    "push_foreign_namespace": (
        "push_adapter(RUN, 'someone-else/x')",
        ["someone-else/x", "cannot write to namespace 'someone-else'", "tester/x"],
    ),
    "check_malformed_id": ("check_push_target('a b')", ["'a b'", "not a valid"]),
    "check_no_token": (
        "with_token(None, check_push_target, 'tester/x')",
        ["tester/x", "no Hugging Face token"],
    ),
    "check_invalid_token": (
        f"check_push_target('tester/x', token='{BAD}')",
        ["tester/x", "rejected the token"],
    ),
    "check_read_only_token": (f"check_push_target('tester/x', token='{READ}')", ["tester/x", "read-only"]),
    "check_foreign_namespace": (
        "check_push_target('acme/x')",
        ["acme/x", "cannot write to namespace 'acme'"],
    ),
}
RUN_CASES = """
from dpo_hub import compare_run, pull_adapter, push_adapter
from dpo_hub.hub.transfer import check_push_target
from huggingface_hub import HfApi
RUN = sys.argv[1]
def with_token(token, fn, *a, **kw):
    saved = os.environ.pop("HF_TOKEN", None)
    try:
        return fn(*a, token=token, **kw)
    finally:
        if saved is not None:
            os.environ["HF_TOKEN"] = saved
def state():
    hf = HfApi(token="hf_test_write")
    return {m.id: hf.model_info(m.id).sha for m in hf.list_models()}
results = {}
for name, call in json.loads(sys.argv[2]).items():
    before = state()
    results[name] = {**error(lambda: eval(call)), "unchanged": state() == before}
out(results=results)
"""


@pytest.fixture(scope="module")
def api_results(hub, run_dir, tmp_path_factory) -> dict:
    """Every API case run in one client process against repos set up for them."""
    tmp = tmp_path_factory.mktemp("cases")
    client(hub, SETUP, tmp, args=[run_dir])
    calls = {name: call for name, (call, _) in API_CASES.items()}
    return client(hub, RUN_CASES, tmp, args=[run_dir, json.dumps(calls)])["results"]


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_bad_hub_input_is_one_clear_hub_error(api_results, case):
    res, needles = api_results[case], API_CASES[case][1]
    assert res["hub"], f"{case}: expected HubError, got {res['type']}: {res['msg']}\n{res['tb']}"
    assert len(res["msg"].splitlines()) == 1, res["msg"]
    for needle in needles:
        assert needle in res["msg"], f"{case}: {needle!r} not in {res['msg']!r}"
    assert not any(secret in res["msg"] for secret in SECRETS)
    assert res["unchanged"], f"{case}: the Hub changed"


UNREACHABLE = {
    "push_unreachable": "push_adapter(RUN, 'tester/x', attempts=2, base_delay=0.01)",
    "pull_unreachable": "pull_adapter('tester/x')",
    "compare_unreachable": "compare_run('tester/x', prompts=[])",
    "check_unreachable": "check_push_target('tester/x')",
}


def test_unreachable_hub_is_one_clear_hub_error(hub, run_dir, tmp_path):
    env = {**hub.client_env(hf_home=tmp_path / "hf_home"), "HF_ENDPOINT": f"http://127.0.0.1:{dead_port()}"}
    code = RUN_CASES.replace("    before = state()\n", "").replace(', "unchanged": state() == before', "")
    start = time.monotonic()
    results = client(hub, code, tmp_path, env=env, args=[run_dir, json.dumps(UNREACHABLE)])["results"]
    assert time.monotonic() - start < 120, "an unreachable Hub must fail fast"
    for case, res in results.items():
        assert res["hub"], f"{case}: {res['type']}: {res['msg']}\n{res['tb']}"
        assert "tester/x" in res["msg"] and "failed" in res["msg"] and "ConnectError" in res["msg"], res
        assert "HF_ENDPOINT" in res["msg"] and len(res["msg"].splitlines()) == 1
    assert "after 2 attempts" in results["push_unreachable"]["msg"]


CLI_CASES = {
    "cli_push_invalid_token": (["push", "{run}", "tester/cli-a"], BAD, "rejected the token"),
    "cli_push_read_only": (["push", "{run}", "tester/cli-b"], READ, "read-only"),
    "cli_push_malformed_id": (["push", "{run}", "tester/no spaces"], WRITE, "not a valid Hub repo id"),
    "cli_pull_missing_repo": (["pull", "tester/cli-nope"], WRITE, "no such repo"),
    "cli_compare_missing_revision": (
        ["compare", "tester/good", "--revision", "nope"],
        WRITE,
        "'nope' does not exist",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_hub_input_prints_one_error_line(hub, api_results, run_dir, tmp_path, case):
    args, token, needle = CLI_CASES[case]
    before = state(hub)
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_hub", *[a.format(run=run_dir) for a in args]],
        env=hub.client_env(token=token, hf_home=tmp_path / "hf_home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not any(s in proc.stdout + proc.stderr for s in SECRETS)
    assert state(hub) == before, "a failing command changed the Hub"


# -- a Hub that dies mid-push --------------------------------------------------------------------
PUSH = """
from dpo_hub import push_adapter
try:
    out(url=push_adapter(sys.argv[1], sys.argv[2], attempts=int(sys.argv[3]), base_delay=float(sys.argv[4])))
except Exception as err:
    out(error=type(err).__name__, msg=str(err))
"""


def push_while_killed(hub: LocalHub, run: Path, repo_id: str, tmp: Path, attempts: int, base_delay: float):
    """Start a push, SIGKILL the Hub while the commit is written but not published; return the push
    process."""
    commits = hub.root / "repos" / "models" / repo_id / "commits"
    before = len(list(commits.iterdir()))
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + PUSH, str(run), repo_id, str(attempts), str(base_delay)],
        env=hub.client_env(hf_home=tmp / "hf_home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(commits.iterdir())) == before:
        assert time.monotonic() < deadline and proc.poll() is None, hub.logs()[-3000:]
        time.sleep(0.05)
    hub.kill()
    return proc


def published_head(root: Path, repo_id: str) -> str | None:
    """The head of main as the server's storage publishes it (readable while the server is down)."""
    return Store(root).resolve(RepoRef("model", repo_id), "main")


@pytest.fixture
def own_hub(tmp_path):
    server = LocalHub(tmp_path / "root")
    server.start()
    yield server
    server.close()


def test_push_survives_a_hub_restart_with_exactly_one_commit(own_hub, variants, tmp_path):
    hub, repo = own_hub, "tester/restarts"
    first = client(hub, PUSH, tmp_path, args=[variants[0], repo, 1, 1])
    assert "url" in first, first
    head, n = api(hub).model_info(repo).sha, len(api(hub).list_repo_commits(repo))
    port = int(hub.url.rsplit(":", 1)[1])
    hub.stop()
    hub.commit_delay = 60.0
    hub.start(port)
    proc = push_while_killed(hub, variants[1], repo, tmp_path, attempts=6, base_delay=1.0)
    time.sleep(1.5)  # the push is retrying against a dead port now
    assert published_head(hub.root, repo) == head, "the half-made commit became visible"
    hub.commit_delay = 2.0  # the retried commit is held a moment: the head is still the old one meanwhile
    hub.start(port)
    seen = api(hub).model_info(repo).sha
    stdout, stderr = proc.communicate(timeout=240)
    res = json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert "url" in res, f"{res}\n{stderr[-3000:]}"
    assert "retry 1 of 5" in stderr and "dpo_hub WARNING" in stderr, stderr[-3000:]
    assert seen == head
    hf = api(hub)
    assert len(hf.list_repo_commits(repo)) == n + 1, "exactly one new commit"
    new_head = hf.model_info(repo).sha
    assert new_head != head and res["url"].endswith(f"/commit/{new_head}")
    assert remote_sha256s(hub, repo, tmp_path) == expected_sha256s(variants[1], repo)


def test_push_whose_retries_all_fail_leaves_the_previous_commit(own_hub, variants, tmp_path):
    hub, repo = own_hub, "tester/gives-up"
    client(hub, PUSH, tmp_path, args=[variants[0], repo, 1, 1])
    head, n = api(hub).model_info(repo).sha, len(api(hub).list_repo_commits(repo))
    port = int(hub.url.rsplit(":", 1)[1])
    hub.stop()
    hub.commit_delay = 60.0
    hub.start(port)
    proc = push_while_killed(hub, variants[1], repo, tmp_path, attempts=3, base_delay=0.2)
    stdout, stderr = proc.communicate(timeout=240)
    res = json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert res.get("error") == "HubError", res
    assert repo in res["msg"] and "after 3 attempts" in res["msg"] and "unchanged" in res["msg"], res["msg"]
    assert stderr.count("dpo_hub WARNING") == 2, stderr[-3000:]
    hub.commit_delay = 0.0
    hub.start(port)
    hf = api(hub)
    assert hf.model_info(repo).sha == head and len(hf.list_repo_commits(repo)) == n
    assert remote_sha256s(hub, repo, tmp_path) == expected_sha256s(variants[0], repo)
    again = client(
        hub, PUSH, tmp_path, args=[variants[1], repo, 1, 1]
    )  # rerunning the failed push completes it
    assert "url" in again and len(hf.list_repo_commits(repo)) == n + 1
    assert remote_sha256s(hub, repo, tmp_path) == expected_sha256s(variants[1], repo)


# -- re-push -------------------------------------------------------------------------------------
def test_repush_of_an_unchanged_run_creates_no_commit(hub, variants, tmp_path):
    res = client(
        hub,
        """
    from huggingface_hub import HfApi
    from dpo_hub import push_adapter
    hf, run, repo = HfApi(), sys.argv[1], "tester/repush"
    first = push_adapter(run, repo)
    n = len(hf.list_repo_commits(repo))
    again = push_adapter(run, repo)
    branch = push_adapter(run, repo, revision="exp")
    branch_again = push_adapter(run, repo, revision="exp")
    out(first=first, again=again, n=n, n_after=len(hf.list_repo_commits(repo)), head=hf.model_info(repo).sha,
        branch=branch, branch_again=branch_again, n_branch=len(hf.list_repo_commits(repo, revision="exp")))
    """,
        tmp_path,
        args=[variants[2]],
    )
    assert res["n_after"] == res["n"] == 2, "re-pushing an unchanged run must not commit"
    assert res["again"] == res["first"] and res["first"].endswith(f"/commit/{res['head']}")
    # a new branch starts at main's head, which already holds the run: no commit there either
    assert res["branch_again"] == res["branch"] == res["first"] and res["n_branch"] == 2
    changed = client(
        hub,
        """
    from huggingface_hub import HfApi
    from dpo_hub import push_adapter
    push_adapter(sys.argv[1], "tester/repush")
    out(n=len(HfApi().list_repo_commits("tester/repush")))
    """,
        tmp_path,
        args=[variants[3]],
    )
    assert changed["n"] == 3, "a changed run is one new commit"


# -- load ----------------------------------------------------------------------------------------
WORKER = """
import hashlib, time
from pathlib import Path
from dpo_hub import build_card
from dpo_hub.hub.transfer import PUBLISHED, check_push_target, download_adapter, push_adapter
p, runs, barrier = int(sys.argv[1]), [Path(r) for r in sys.argv[2].split(",")], Path(sys.argv[3])
ops, failures, checked = [], [], 0
def expected(run, repo):
    found = {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in PUBLISHED if (run / n).is_file()}
    return {**found, "README.md": hashlib.sha256(str(build_card(run, repo)).encode()).hexdigest()}
def op(name, fn, *a, **kw):
    try:
        ops.append(name)
        return fn(*a, **kw)
    except Exception as err:
        failures.append(f"{name}: {type(err).__name__}: {err}")
def pull(repo, allowed):
    global checked
    folder = op(f"pull {repo}", download_adapter, repo)
    if folder is None:
        return
    got = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in expected(runs[0], repo)}
    checked += len(got)
    if not any(got == expected(run, repo) for run in allowed):
        failures.append(f"pull {repo}: the files match none of the pushed runs")
mine = runs[p]
if p < 3:
    op("check", check_push_target, f"tester/load-{p}")
    op(f"push tester/load-{p}", push_adapter, mine, f"tester/load-{p}")
    op("push tester/load-shared", push_adapter, mine, "tester/load-shared")
else:
    op("check", check_push_target, "tester/load-shared")
    op("push tester/load-shared", push_adapter, mine, "tester/load-shared")
(barrier / str(p)).touch()
deadline = time.monotonic() + 300
while len(list(barrier.iterdir())) < len(runs) and time.monotonic() < deadline:
    time.sleep(0.2)
if p < 3:
    pull(f"tester/load-{p}", [mine])
else:
    pull(f"tester/load-{p - 3}", [runs[p - 3]])
    pull(f"tester/load-{(p - 2) % 3}", [runs[(p - 2) % 3]])
pull("tester/load-shared", runs)
out(ops=len(ops), failures=failures, checked=checked)
"""


def test_concurrent_pushes_and_pulls(hub, variants, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = hub.client_env(hf_home=tmp_path / "hf_home")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRELUDE + WORKER, str(p), ",".join(map(str, variants)), str(barrier)],
            env={**env, "HF_HOME": str(tmp_path / f"hf_home{p}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(6)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads([ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1][7:]))
    ops, checked = sum(r["ops"] for r in results), sum(r["checked"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    shared = remote_sha256s(hub, "tester/load-shared", tmp_path)  # the final head, read back by this process
    matches = [k for k, run in enumerate(variants) if shared == expected_sha256s(run, "tester/load-shared")]
    for k in range(3):
        checked += len(expected_sha256s(variants[k], f"tester/load-{k}"))
        if remote_sha256s(hub, f"tester/load-{k}", tmp_path) != expected_sha256s(
            variants[k], f"tester/load-{k}"
        ):
            failures.append(f"tester/load-{k} does not hold run {k}")
    checked += len(shared)
    print(
        f"\nload test: {len(procs)} processes, {ops} operations, {checked} files checked, {len(failures)} "
        "failures"
    )
    assert ops == 30 and not failures, failures
    assert len(matches) == 1, "the shared repo's head must be exactly one pushed run, never a mix"
    assert api(hub).whoami()["name"] == "tester", "the server still answers"
    assert len(api(hub).list_repo_commits("tester/load-shared")) <= 7


# -- secrets -------------------------------------------------------------------------------------
SECRET_RUN = """
from dpo_hub import pull_adapter, push_adapter
from huggingface_hub import hf_hub_download
run = sys.argv[1]
url = push_adapter(run, "tester/secret")
model, tokenizer = pull_adapter("tester/secret")
read_only = error(push_adapter, run, "tester/secret-2", token="hf_test_read")
bad = error(push_adapter, run, "tester/secret-3", token=sys.argv[2])
card = open(hf_hub_download("tester/secret", "README.md")).read()
out(url=url, read_only=read_only, bad=bad, card=card)
"""


def test_tokens_never_reach_output_files_cards_or_errors(hub, variants, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(variants[4], run)
    res = client(hub, SECRET_RUN, tmp_path, args=[run, BAD])
    assert res["read_only"]["hub"] and res["bad"]["hub"], res
    texts = {
        "stdout": res["_stdout"],
        "stderr": res["_stderr"],
        "card": res["card"],
        **{f"{k} error": json.dumps(res[k]) for k in ("read_only", "bad")},
    }
    for path in [*run.rglob("*"), *(tmp_path / "hf_home").rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert len(texts) > 20
    leaks = [(where, secret) for where, text in texts.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks
    assert os.environ.get("HF_TOKEN") not in {WRITE, READ}  # the test process itself never held them
