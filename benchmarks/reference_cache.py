"""Reference log-probs: trl's ``precompute_ref_log_probs`` cache vs dpo_hub's lazy per-pair cache.

Run:  python benchmarks/reference_cache.py [--limit 200] [--json out.json]

One command, offline (HF_HUB_OFFLINE=1), on the embedded default (tiny GPT-2-architecture model with seeded
weights, the bundled UltraFeedback-schema sample, first ``--limit`` rows, 15% held out). Everything goes to a
temporary folder that is deleted at the end; nothing under ~/.cache is read or written.

- trl side: plain ``trl.DPOTrainer`` + a peft ``LoraConfig`` like dpo_hub's ``gpt2_attention`` preset, with
  ``precompute_ref_log_probs=True``. The precompute pass is timed by a subclass that wraps trl's
  ``_precompute_ref_logps`` (the only private name used here; it also tells whether trl's cache file existed).
  trl runs in a separate (spawned) worker process, so dpo_hub's speed levers of the other side cannot leak
  into it; the two sides take turns, never at the same time.
- dpo_hub side: the public API only (``Recipe``/``train``, the shipped ``gpt2_ultrafeedback`` recipe,
  ``override``), a fresh ``DPO_HUB_CACHE``; figures read from each run's ``metrics.json``.

The scenarios alternate sides: cold, rerun, a ``max_steps`` run on a cold cache, sweep points over beta and
LoRA rank on a warm cache; trl-only rows show what else decides whether trl's cache hits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 42
EVAL_FRACTION = 0.15
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}  # dpo_hub's gpt2_attention preset (LoraPreset defaults)


# ----------------------------------------------------------------------------------------------- trl side
# Everything below runs in the spawned worker: module-level functions, so they can be called across processes.


def _sample_path() -> Path:
    return REPO / "dpo_hub" / "embedded" / "sample.jsonl"


def _tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO / "dpo_hub" / "embedded" / "gpt2_tokenizer")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model():
    """The embedded tiny GPT-2, as ``dpo_hub.embedded.build_model`` builds it (same config and seed), built
    here so that the trl worker never imports dpo_hub."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50257,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        n_layer=2,
        n_head=4,
        n_embd=64,
        n_positions=1024,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = 50256
    return model.eval()


def prepare_in_memory(limit: int):
    """Text pairs from the bundled sample, shuffled and split like dpo_hub does (in memory, ``from_list``)."""
    import datasets

    rows = [json.loads(line) for line in _sample_path().read_text(encoding="utf-8").splitlines()][:limit]
    pairs = [
        {
            "prompt": f"User: {r['prompt']}\nAssistant:",
            "chosen": " " + r["chosen"][-1]["content"],
            "rejected": " " + r["rejected"][-1]["content"],
        }
        for r in rows
    ]
    table = datasets.Dataset.from_list(pairs)
    split = table.train_test_split(test_size=max(1, round(len(pairs) * EVAL_FRACTION)), seed=SEED)
    return split["train"], split["test"]


def stage(limit: int, folder: Path):
    """Prepare the pairs afresh and save them into ``folder`` (what dpo_hub does per run); load them back."""
    train, held_out = prepare_in_memory(limit)
    train.save_to_disk(str(folder / "train"))
    held_out.save_to_disk(str(folder / "eval"))
    return load(folder)


def load(folder: Path):
    import datasets

    return datasets.load_from_disk(str(folder / "train")), datasets.load_from_disk(str(folder / "eval"))


_RECORDS: list[dict] = []


def _timed_trainer_class():
    from trl import DPOTrainer

    class TimedDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            from datasets.fingerprint import Hasher

            fingerprint = Hasher.hash((dataset._fingerprint, self._precompute_model_hash))  # as trl keys it
            cache_file = dataset._get_cache_file_path(fingerprint) if dataset.cache_files else None
            hit = cache_file is not None and os.path.exists(cache_file)
            started = time.perf_counter()
            result = super()._precompute_ref_logps(dataset, name, batch_size)
            _RECORDS.append(
                {
                    "split": name,
                    "s": time.perf_counter() - started,
                    "pairs": len(dataset),
                    "hit": hit,
                    "cache_file": cache_file,
                    "model_hash": self._precompute_model_hash[:12],
                    "dataset_fingerprint": dataset._fingerprint,
                }
            )
            return result

    return TimedDPOTrainer


def build_trl_trainer(
    train,
    held_out,
    out: str,
    precompute: bool = True,
    seed: int | None = SEED,
    r: int = LORA["r"],
    beta: float = 0.1,
    max_steps: int = -1,
) -> dict:
    """Construct (not train) a trl DPOTrainer; return the construction time and the precompute records."""
    from peft import LoraConfig
    from transformers import set_seed
    from trl import DPOConfig

    args = DPOConfig(
        output_dir=out,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=2,  # = dpo_hub's eval batch
        per_device_train_batch_size=1,
        per_device_eval_batch_size=2,
        max_length=512,
        beta=beta,
        max_steps=max_steps,
        learning_rate=1e-4,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        logging_steps=10,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=LORA["lora_dropout"],
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
    )
    model = _model()
    if seed is not None:
        set_seed(seed)  # the LoRA init happens in the constructor and enters trl's model hash
    del _RECORDS[:]
    started = time.perf_counter()
    _timed_trainer_class()(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=_tokenizer(),
        peft_config=peft_config,
    )
    construct = time.perf_counter() - started
    records = [dict(r) for r in _RECORDS]
    computed = sum(r["pairs"] for r in records if not r["hit"])
    return {
        "construct_s": construct,
        "precompute_s": sum(r["s"] for r in records),
        "pairs_computed": computed,
        "hits": {r["split"]: r["hit"] for r in records},
        "records": records,
    }


def trl_scenario(name: str, root: str, limit: int) -> dict:
    """One trl scenario, in the worker process. Folders: A = the dataset's folder kept across 'runs'."""
    root_path = Path(root)
    a = root_path / "trl_data_A"
    out = str(root_path / "trl_out" / name)
    note = ""
    if name == "cold":
        result = build_trl_trainer(*stage(limit, a), out)
        files = sorted(p.name for p in (a / "train").glob("cache-*.arrow"))
        note = f"dataset folder A/train holds {len(files)} cache-*.arrow files after the pass"
    elif name == "rerun_same_files":
        result = build_trl_trainer(*load(a), out)  # a new Dataset object, re-loaded from the same files
    elif name == "rerun_restaged":
        b = root_path / "staging_B" / "prepared"
        train, held_out = stage(
            limit, b
        )  # prepared afresh into a new staging folder, as dpo_hub does per run
        result = build_trl_trainer(train, held_out, out)
        files = [r["cache_file"] for r in result["records"]]
        shutil.rmtree(b.parent)  # the staging folder goes when the run is done
        note = (
            f"fingerprint same as in A: {train._fingerprint == load(a)[0]._fingerprint}; "
            "after deleting the staging folder, trl's cache files exist: "
            f"{[os.path.exists(f) for f in files]}"
        )
    elif name == "max_steps_cold":
        c = root_path / "staging_C" / "prepared"
        result = build_trl_trainer(*stage(limit, c), out, max_steps=4)
        shutil.rmtree(c.parent)
    elif name == "sweep_beta":
        result = build_trl_trainer(*load(a), out, beta=0.2)
    elif name == "sweep_lora_r":
        result = build_trl_trainer(*load(a), out, r=8)
    elif name == "no_set_seed":
        result = build_trl_trainer(*load(a), out, seed=None)  # LoRA init from wherever the global RNG is
    elif name == "in_memory":
        result = build_trl_trainer(*prepare_in_memory(limit), out)  # Dataset.from_list, never saved
        note = "in-memory dataset: trl writes to a temporary folder under a random file name"
    else:
        raise ValueError(name)
    result["note"] = note
    return result


# ----------------------------------------------------------------------------------------------- dpo_hub side


def _purge_dpo_hub() -> None:
    for module in [m for m in sys.modules if m == "dpo_hub" or m.startswith("dpo_hub.")]:
        del sys.modules[module]


def dpo_hub_run(
    label: str, overrides: dict, cache: Path, root: Path, limit: int, retries: int = 3, wait_s: float = 180
) -> dict:
    """One run through the public API; retried (fresh import) if a concurrent refactor breaks it."""
    os.environ["DPO_HUB_CACHE"] = str(cache)
    errors = []
    for attempt in range(1 + retries):
        out = root / "dpo_hub_runs" / f"{label}-{attempt}"
        try:
            from dpo_hub import train
            from dpo_hub.recipes.gpt2_ultrafeedback import RECIPE

            recipe = RECIPE.override({"data.limit": limit, **overrides})
            started = time.perf_counter()
            folder = train(recipe, output_dir=out)
            wall = time.perf_counter() - started
            metrics = json.loads((Path(folder) / "metrics.json").read_text())
            train_metrics = metrics.get("train", {})
            reference = {k: v for k, v in train_metrics.items() if k.startswith("reference")}
            return {
                "wall_s": wall,
                "reference": reference,
                "levers": metrics.get("levers"),
                "train_runtime": train_metrics.get("train_runtime"),
                "global_step": train_metrics.get("global_step"),
                "pairs": metrics.get("data"),
                "errors": errors,
            }
        except Exception as err:  # noqa: BLE001 - reported, then retried on freshly imported code
            errors.append(f"attempt {attempt + 1}: {type(err).__name__}: {err}")
            print(f"[dpo_hub {label}] {errors[-1]}\n{traceback.format_exc(limit=4)}", flush=True)
            if attempt < retries:
                print(
                    f"[dpo_hub {label}] waiting {wait_s:.0f} s for the refactor to settle, then retrying",
                    flush=True,
                )
                time.sleep(wait_s)
                _purge_dpo_hub()
    return {"wall_s": None, "reference": {}, "levers": None, "errors": errors}


# ----------------------------------------------------------------------------------------------- main


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    import datasets
    import peft
    import torch
    import transformers
    import trl

    return (
        f"CPU {cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; python "
        f"{platform.python_version()}, torch {torch.__version__}, trl {trl.__version__}, peft "
        f"{peft.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}"
    )


def _trl_globals_snapshot() -> dict:
    import trl.trainer.dpo_trainer as module
    from trl import DPOTrainer

    return {
        **{f"trl.trainer.dpo_trainer.{k}": id(v) for k, v in vars(module).items()},
        **{f"DPOTrainer.{k}": id(v) for k, v in vars(DPOTrainer).items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="rows of the bundled sample (both sides)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    opts = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="dpo_hub_refcache_"))
    os.environ.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(root / "hf_home"),
        HF_DATASETS_CACHE=str(root / "hf_home" / "datasets"),
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
        TQDM_DISABLE="1",
        DPO_HUB_CACHE=str(root / "unused_cache"),
    )
    os.environ.pop("ACCELERATE_CONFIG_FILE", None)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    print("machine:", machine(), flush=True)
    print(
        f"data: embedded sample, first {opts.limit} rows, {EVAL_FRACTION:.0%} held out; temp folder {root}",
        flush=True,
    )
    results: dict = {"machine": machine(), "limit": opts.limit, "trl": {}, "dpo_hub": {}}
    before = _trl_globals_snapshot()
    worker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    cache_a, cache_b = root / "dpo_hub_cache_A", root / "dpo_hub_cache_B"

    def trl(name: str) -> None:
        t0 = time.perf_counter()
        try:
            res = worker.submit(trl_scenario, name, str(root), opts.limit).result()
        except Exception as err:  # noqa: BLE001
            res = {"error": f"{type(err).__name__}: {err}"}
        results["trl"][name] = res
        shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items() if k != "records"}
        print(f"[trl {name}] {time.perf_counter() - t0:.1f} s: {shown}", flush=True)
        for record in res.get("records", []):
            print(
                f"    {record['split']}: {record['pairs']} pairs, {record['s']:.2f} s, hit={record['hit']}, "
                f"model hash {record['model_hash']}, file {record['cache_file']}",
                flush=True,
            )

    def hub(label: str, overrides: dict, cache: Path) -> None:
        res = dpo_hub_run(label, overrides, cache, root, opts.limit)
        results["dpo_hub"][label] = res
        print(
            f"[dpo_hub {label}] wall {res['wall_s'] and round(res['wall_s'], 1)} s, steps "
            f"{res.get('global_step')}, train.reference*: {res['reference']}, levers: "
            f"{json.dumps(res['levers'])}",
            flush=True,
        )

    try:
        trl("cold")  # stages the dataset into folder A first
        hub("cold", {}, cache_a)
        trl("rerun_same_files")
        hub("rerun", {}, cache_a)
        trl("rerun_restaged")
        hub("max_steps_cold", {"dpo.max_steps": 4}, cache_b)
        trl("max_steps_cold")
        hub("sweep_beta", {"dpo.beta": 0.2}, cache_a)
        trl("sweep_beta")
        trl("sweep_lora_r")
        hub("sweep_lora_r", {"lora.r": 8, "lora.lora_alpha": 16}, cache_a)
        trl("no_set_seed")
        trl("in_memory")
    finally:
        worker.shutdown()
    after = _trl_globals_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    results["trl_names_changed_in_this_process_by_dpo_hub"] = changed

    table = summary(results)
    print("\n" + machine())
    print(
        f"command: python benchmarks/reference_cache.py --limit {opts.limit}; whole run "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(table)
    print("trl/DPOTrainer names still replaced in this process after dpo_hub's runs:", changed or "none")
    results["table"] = table
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1, default=str))
    if not opts.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


ROWS = [  # scenario, trl key, dpo_hub key
    ("cold cache, full epoch", "cold", "cold"),
    ("rerun (trl: same dataset files re-loaded)", "rerun_same_files", "rerun"),
    ("rerun (trl: data re-prepared into a new staging folder, as dpo_hub does)", "rerun_restaged", None),
    ("max_steps 4, cold cache", "max_steps_cold", "max_steps_cold"),
    ("sweep point dpo.beta 0.2, warm cache", "sweep_beta", "sweep_beta"),
    ("sweep point lora.r 8, warm cache", "sweep_lora_r", "sweep_lora_r"),
    ("second trainer in the process without set_seed (trl only)", "no_set_seed", None),
    ("in-memory Dataset.from_list (trl only)", "in_memory", None),
]


def summary(results: dict) -> str:
    lines = [
        "| scenario | trl s (precompute pass) | dpo_hub s (train.reference_s) | pairs computed trl / dpo_hub "
        "| trl cache hit (train, eval) | dpo_hub pairs reused |",
        "|---|---|---|---|---|---|",
    ]
    for label, trl_key, hub_key in ROWS:
        t = results["trl"].get(trl_key, {})
        h = results["dpo_hub"].get(hub_key, {}) if hub_key else {}
        ref = h.get("reference", {})
        trl_s = f"{t['precompute_s']:.2f}" if "precompute_s" in t else t.get("error", "-")
        hub_s = ref.get("reference_s", "-") if hub_key else "n/a"
        if hub_key and h.get("errors") and h.get("wall_s") is None:
            hub_s = "failed: " + h["errors"][-1][:80]
        computed_hub = ref.get("reference_pairs_computed", "-") if hub_key else "n/a"
        reused = ref.get("reference_pairs_reused", "-") if hub_key else "n/a"
        hits = ", ".join(str(v) for v in t.get("hits", {}).values()) or "-"
        lines.append(
            f"| {label} | {trl_s} | {hub_s} | {t.get('pairs_computed', '-')} / {computed_hub} | {hits} "
            f"| {reused} |"
        )
    cold = results["trl"].get("cold", {})
    if "construct_s" in cold:
        lines.append(
            f"\ntrl cold: trainer construction {cold['construct_s']:.2f} s, of which the precompute pass "
            f"{cold['precompute_s']:.2f} s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
