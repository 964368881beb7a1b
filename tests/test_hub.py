"""Push/pull over real HTTP against the local Hub, driven by the unmodified huggingface_hub client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import RECIPE_MODULE, read_metrics

from dpo_hub.testing.hub import LocalHub

PRELUDE = """
import json, sys
def out(**kw):
    print("RESULT " + json.dumps(kw, default=str), flush=True)
def error(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
"""
LOGITS = """
    import torch
    def logits(model, tokenizer):
        with torch.no_grad():
            return model(**tokenizer("Is eating animals cruel?", return_tensors="pt")).logits
"""  # indented like the snippets it is prepended to


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub"), seed=True) as server:
        yield server


def client(hub, code: str, tmp, token: str | None = "hf_test_write", check: bool = True, args=()) -> dict:
    env = hub.client_env(token=token, hf_home=tmp / "hf_home")
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for secret in ("hf_test_write", "hf_test_read"):
        assert secret not in proc.stdout + proc.stderr, "a token reached the output"
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return {
        **(json.loads(lines[-1][7:]) if lines else {}),
        "_stdout": proc.stdout,
        "_stderr": proc.stderr,
        "_rc": proc.returncode,
    }


def cli(hub, args, tmp, token="hf_test_write") -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_hub", *map(str, args)],
        capture_output=True,
        text=True,
        env=hub.client_env(token=token, hf_home=tmp / "hf_home"),
        timeout=300,
    )
    assert "hf_test_write" not in proc.stdout + proc.stderr
    return proc


def test_push_then_pull_gives_identical_tensors_and_logits(hub, trained_run, tmp_path):
    out, _ = trained_run
    res = client(
        hub,
        LOGITS
        + """
    from huggingface_hub import HfApi
    from peft import PeftModel
    from safetensors.torch import load_file
    from dpo_hub import embedded, pull_adapter, push_adapter
    folder = sys.argv[1]
    api = HfApi()
    url = push_adapter(folder, "tester/gpt2-dpo")
    commits = len(api.list_repo_commits("tester/gpt2-dpo"))
    files = api.list_repo_files("tester/gpt2-dpo")
    model, tokenizer = pull_adapter("tester/gpt2-dpo")
    local = PeftModel.from_pretrained(embedded.build_model(), folder).eval()
    mine = load_file(folder + "/adapter_model.safetensors")
    pulled = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    same = all(torch.equal(v, pulled[k.replace(".weight", ".default.weight")]) for k, v in mine.items())
    diff = (logits(model, tokenizer) - logits(local, tokenizer)).abs().max().item()
    with model.disable_adapter():
        base_diff = (logits(model, tokenizer) - logits(embedded.build_model(), tokenizer)).abs().max().item()
    again = push_adapter(folder, "tester/gpt2-dpo")
    out(url=url, commits=commits, files=files, same=same, n=len(mine), diff=diff, base_diff=base_diff,
        commits_after=len(api.list_repo_commits("tester/gpt2-dpo")), \
files_after=api.list_repo_files("tester/gpt2-dpo"))
    """,
        tmp_path,
        args=[out],
    )
    assert "/tester/gpt2-dpo/commit/" in res["url"]
    assert res["commits"] == 2, "repo creation + exactly one commit for the whole run"
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "recipe.yaml",
        "metrics.json",
        "loss.png",
        "README.md",
    } <= set(res["files"])
    assert not any(f.endswith((".bin", ".pt")) for f in res["files"])
    assert res["same"] and res["n"] > 0 and res["diff"] == 0.0 and res["base_diff"] == 0.0
    assert res["files_after"] == res["files"] and res["commits_after"] == 2, (
        "re-push of the same run: no commit"
    )


def test_card_validates_and_round_trips_its_metrics(hub, trained_run, tmp_path):
    out, _ = trained_run
    res = client(
        hub,
        """
    from huggingface_hub import ModelCard
    from dpo_hub import push_adapter
    push_adapter(sys.argv[1], "tester/card-check")
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
    card = ModelCard.load("tester/card-check")
    d = card.data
    index = d.to_dict()["model-index"]  # the Hub's own parser of the model-index, not our server's validator
    name, parsed = model_index_to_eval_results(index)
    out(base=d.base_model, lib=d.library_name, tag=d.pipeline_tag, lic=d.license, datasets=d.datasets, \
tags=d.tags,
        results={r.metric_type: r.metric_value for r in d.eval_results}, text=card.text, name=name,
        round_trip=eval_results_to_model_index(name, parsed) == index,
        tasks=sorted({r.task_type for r in parsed}), splits=sorted({r.dataset_split for r in parsed}))
    """,
        tmp_path,
        args=[out],
    )
    assert res["name"] == "tester/card-check" and res["round_trip"] is True
    assert res["tasks"] == ["text-generation"] and res["splits"] == ["eval"]
    metrics = read_metrics(out)["eval_after"]
    assert (
        res["base"] == "dpo-hub/tiny-gpt2-embedded"
        and res["lib"] == "peft"
        and res["tag"] == "text-generation"
    )
    assert res["lic"] == "mit" and res["datasets"] == ["dpo-hub/ultrafeedback-sample"]
    assert {"dpo", "lora", "trl", "dpo-hub"} <= set(res["tags"])
    assert res["results"]["loss"] == pytest.approx(metrics["eval_loss"], abs=1e-4)
    assert res["results"]["rewards/accuracies"] == pytest.approx(metrics["eval_rewards/accuracies"], abs=1e-4)
    assert res["results"]["rewards/margins"] == pytest.approx(metrics["eval_rewards/margins"], abs=1e-4)
    for needle in (
        "AutoPeftModelForCausalLM",
        "pull_adapter(",
        "loss.png",
        "name: embedded",
        "Is eating animals",
        "preference accuracy",
    ):
        assert needle in res["text"]


def test_plain_peft_loads_the_pushed_repo_without_dpo_hub(hub, trained_run, tmp_path):
    out, _ = trained_run
    client(
        hub,
        "from dpo_hub import push_adapter; push_adapter(sys.argv[1], 'tester/plain-peft')",
        tmp_path,
        args=[out],
    )
    res = client(
        hub,
        LOGITS
        + """
    import builtins
    real_import = builtins.__import__
    def no_dpo_hub(name, *a, **kw):
        if name.startswith("dpo_hub"):
            raise ImportError("dpo_hub must not be needed")
        return real_import(name, *a, **kw)
    builtins.__import__ = no_dpo_hub
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer
    model = AutoPeftModelForCausalLM.from_pretrained("tester/plain-peft")
    tokenizer = AutoTokenizer.from_pretrained("tester/plain-peft")
    torch.save(logits(model.eval(), tokenizer), sys.argv[1])
    out(ok=True)
    """,
        tmp_path,
        args=[tmp_path / "peft.pt"],
    )
    local = client(
        hub,
        LOGITS
        + """
    from dpo_hub import pull_adapter
    model, tokenizer = pull_adapter("tester/plain-peft")
    out(diff=(logits(model, tokenizer) - torch.load(sys.argv[1])).abs().max().item())
    """,
        tmp_path,
        args=[tmp_path / "peft.pt"],
    )
    assert res["ok"] and local["diff"] == 0.0


def test_cli_private_repo_tokens_and_branches(hub, trained_run, tmp_path):
    out, _ = trained_run
    pushed = cli(hub, ["push", out, "tester/private-dpo", "--private"], tmp_path)
    assert pushed.returncode == 0 and "/tester/private-dpo/commit/" in pushed.stdout, pushed.stderr[-2000:]
    on_branch = cli(hub, ["push", out, "tester/private-dpo", "--revision", "exp/beta"], tmp_path)
    assert on_branch.returncode == 0, on_branch.stderr[-2000:]
    res = client(
        hub,
        """
    from huggingface_hub import HfApi
    from dpo_hub import pull_adapter
    model, _ = pull_adapter("tester/private-dpo", revision="exp/beta")
    refs = HfApi().list_repo_refs("tester/private-dpo")
    out(branches=sorted(b.name for b in refs.branches), \
base=model.peft_config["default"].base_model_name_or_path)
    """,
        tmp_path,
    )
    assert res["branches"] == ["exp/beta", "main"] and res["base"] == "dpo-hub/tiny-gpt2-embedded"
    pulled = cli(
        hub,
        ["pull", "tester/private-dpo", "--prompt", "How do I bake bread?"],
        tmp_path,
        token="hf_test_read",
    )
    assert pulled.returncode == 0 and "How do I bake bread?" in pulled.stdout and "**tuned**" in pulled.stdout
    anonymous = cli(hub, ["pull", "tester/private-dpo"], tmp_path, token=None)
    assert anonymous.returncode != 0 and "private-dpo" in anonymous.stderr
    read_only = cli(hub, ["push", out, "tester/private-dpo"], tmp_path, token="hf_test_read")
    assert read_only.returncode == 1 and "read-only" in read_only.stderr
    wrong = cli(hub, ["push", out, "tester/x"], tmp_path, token="hf_wrong_token")
    assert wrong.returncode == 1 and "rejected the token" in wrong.stderr
    other_user = cli(hub, ["push", out, "someone-else/x"], tmp_path)
    assert other_user.returncode == 1 and "cannot write to namespace 'someone-else'" in other_user.stderr


def test_pull_refuses_pickles_and_mismatched_base(hub, tmp_path):
    res = client(
        hub,
        """
    from huggingface_hub import HfApi
    from dpo_hub import pull_adapter
    api = HfApi()
    api.create_repo("tester/pickled")
    api.upload_file(path_or_fileobj=b"not really a pickle", path_in_repo="adapter_model.bin", \
repo_id="tester/pickled")
    pickled = error(pull_adapter, "tester/pickled")
    api.create_repo("tester/mismatch")
    cfg = json.dumps({"base_model_name_or_path": "dpo-hub/tiny-gpt2-embedded", "peft_type": "LORA"}).encode()
    api.upload_file(path_or_fileobj=cfg, path_in_repo="adapter_config.json", repo_id="tester/mismatch")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="adapter_model.safetensors", repo_id="tester/mismatch")
    api.upload_file(path_or_fileobj=b"---\\nbase_model: gpt2\\n---\\n", path_in_repo="README.md", \
repo_id="tester/mismatch")
    api.create_repo("tester/no-base")
    cfg = json.dumps({"base_model_name_or_path": "tester/missing-base", "peft_type": "LORA"}).encode()
    api.upload_file(path_or_fileobj=cfg, path_in_repo="adapter_config.json", repo_id="tester/no-base")
    from safetensors.torch import save
    import torch
    weights = save({"base_model.model.lm_head.lora_A.weight": torch.zeros(1, 1)})
    api.upload_file(path_or_fileobj=weights, path_in_repo="adapter_model.safetensors", \
repo_id="tester/no-base")
    out(pickled=pickled, mismatch=error(pull_adapter, "tester/mismatch"), missing=error(pull_adapter, \
"tester/nope"),
        no_base=error(pull_adapter, "tester/no-base"))
    """,
        tmp_path,
    )
    assert "HubError" in res["no_base"] and "'tester/missing-base'" in res["no_base"]
    assert "pickle" in res["pickled"] and "adapter_model.bin" in res["pickled"]
    assert "'gpt2'" in res["mismatch"] and "does not match" in res["mismatch"]
    assert "tester/nope" in res["missing"]


def test_interrupted_push_keeps_previous_commit_and_retry_succeeds(trained_run, tmp_path):
    out, _ = trained_run
    root = tmp_path / "root"
    hub = LocalHub(root)
    try:
        hub.start()
        first = client(
            hub,
            "from huggingface_hub import HfApi; from dpo_hub import push_adapter\n"
            "push_adapter(sys.argv[1], 'tester/crashy'); out(sha=HfApi().model_info('tester/crashy').sha)",
            tmp_path,
            args=[out],
        )
        hub.stop()
        hub.commit_delay = 30.0
        hub.start()
        commits = root / "repos" / "models" / "tester" / "crashy" / "commits"
        before = len(list(commits.iterdir()))
        env = hub.client_env(hf_home=tmp_path / "hf_home")
        changed = tmp_path / "changed-run"  # a different run, so the push really commits
        shutil.copytree(out, changed)
        (changed / "generations.md").write_text("a later run\n")
        push = subprocess.Popen(
            [sys.executable, "-m", "dpo_hub", "push", str(changed), "tester/crashy", "--revision", "main"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while len(list(commits.iterdir())) == before:  # the commit is being applied: kill the server now
            assert time.monotonic() < deadline and push.poll() is None, hub.logs()
            time.sleep(0.05)
        hub.kill()
        _, stderr = push.communicate(timeout=120)
        assert push.returncode != 0 and "hf_test_write" not in stderr
        hub.commit_delay = 0.0
        hub.start()
        after = client(
            hub,
            """
        from huggingface_hub import HfApi
        from dpo_hub import push_adapter
        api = HfApi()
        sha = api.model_info("tester/crashy").sha
        url = push_adapter(sys.argv[1], "tester/crashy")
        text = open(hf_hub_download("tester/crashy", "generations.md")).read()
        out(sha=sha, url=url, files=api.list_repo_files("tester/crashy"), text=text)
        """.replace(
                "from huggingface_hub import HfApi", "from huggingface_hub import HfApi, hf_hub_download"
            ),
            tmp_path,
            args=[changed],
        )
        assert after["sha"] == first["sha"], "the interrupted push must leave the previous commit"
        assert "adapter_model.safetensors" in after["files"] and "/commit/" in after["url"]
        assert after["text"] == "a later run\n", "the retry publishes the new run"
    finally:
        hub.close()


def test_recipe_trains_from_the_seeded_hub_and_pushes(hub, tmp_path):
    out = tmp_path / "from-hub"
    env = hub.client_env(hf_home=tmp_path / "hf_home")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            RECIPE_MODULE,
            "--model",
            "dpo-hub/tiny-gpt2-embedded",
            "--data.dataset",
            "dpo-hub/ultrafeedback-sample",
            "--data.limit",
            "40",
            "--dpo.max_steps",
            "3",
            "--output_dir",
            str(out),
            "--push_to_hub",
            "tester/trained-from-hub",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "EMBEDDED DEFAULT" not in proc.stdout and "hf_test_write" not in proc.stdout + proc.stderr
    metrics = read_metrics(out)
    assert metrics["model"] == "dpo-hub/tiny-gpt2-embedded" and metrics["embedded"] is None
    assert metrics["data"]["train_pairs"] + metrics["data"]["eval_pairs"] == 40
    assert "/tester/trained-from-hub/commit/" in proc.stdout


def test_pulled_repo_compares_the_same_as_its_folder(hub, trained_run, tmp_path):
    out, _ = trained_run
    client(
        hub,
        "from dpo_hub import push_adapter; push_adapter(sys.argv[1], 'tester/compare-me')",
        tmp_path,
        args=[out],
    )
    res = client(
        hub,
        """
    from dpo_hub import compare_run
    remote = compare_run("tester/compare-me", prompts=[]).to_dict()["preference"]
    local = compare_run(sys.argv[1], prompts=[]).to_dict()["preference"]
    out(remote=remote, local=local)
    """,
        tmp_path,
        args=[out],
    )
    assert res["remote"] == res["local"] and res["local"]["n_pairs"] == 30
    proc = cli(
        hub, ["compare", "tester/compare-me", "--output", tmp_path / "cmp", "--prompt", "Hi?"], tmp_path
    )
    assert proc.returncode == 0 and "preference accuracy" in proc.stdout, proc.stderr[-2000:]
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["preference"]["n_pairs"] == 30
