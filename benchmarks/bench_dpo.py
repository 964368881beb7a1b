"""The tutorial's DPO setup through plain trl vs dpo_hub's default recipe: same model, data and machine.

Run:  python benchmarks/bench_dpo.py [--quick] [--steps N] [--rounds R] [--json FILE]

(a) ``tutorial``: GPT-2 + LoRA r=4 on c_attn/c_proj, batch 1, fp32 on CPU, max_length 512, reference = the
base
    with the adapter disabled, every other setting trl's default (gradient checkpointing, eval batch 8,
    dropout off). Plain trl/peft/transformers: no dpo_hub code runs in that path.
(b) ``dpo_hub``: the default recipe (``dpo_hub.Recipe()`` with this model and data) through ``dpo_hub.train``,
    which also evaluates before training, scores base vs tuned and writes its run folder; with an empty
    reference cache (cold), then rerun on the cache it filled (``dpo_hub_warm``: a rerun or a sweep point).
Both sides train the same pairs in the same order (``train_sampling_strategy="sequential"``).
Each side runs in its own process, alternating a, b, a, b, so load on the machine hits both alike. Printed per
side: non-padding tokens trained per second (trl's ``num_tokens`` over the timed steps, dpo_hub's reference
pass included), seconds per optimizer step (median after warm-up), peak memory of the whole process (RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU; evaluation included), achieved FLOP/s (6 x parameters x
tokens / s, the usual convention) against the matmul peak measured in this run, and final eval loss and reward
accuracy on the same held-out pairs; then the ratios b/a.

Model: ``GPT2Config()`` (GPT-2-124M's shape and FLOPs) with seeded random weights: no weights download here.
Data: see ``make_pairs``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
WARMUP_STEPS = 2
MAX_LENGTH = 512

# Token lengths (GPT-2 tokenizer) of UltraFeedback pairs, modelled as log-normal: prompts median 90 tokens
# (sigma 0.9, so a long tail of pasted documents), answers median 220 (sigma 0.6), capped at 480. An
# approximation of the binarized UltraFeedback prompts/answers (UltraChat, ShareGPT, Evol-Instruct, FLAN
# prompts; 4 model answers each) written for this benchmark: the dataset itself cannot be downloaded here.
# With max_length 512 about a fifth of the pairs are cut, as trl cuts real UltraFeedback pairs.
PROMPT_MEDIAN, PROMPT_SIGMA, ANSWER_MEDIAN, ANSWER_SIGMA, LENGTH_CAP = 90, 0.9, 220, 0.6, 480


def make_pairs(n: int, seed: int, tokenizer) -> list[dict]:
    """``n`` pairs of word text with UltraFeedback-like token lengths. Chosen answers draw words from the
    embedded sample's chosen answers, rejected ones from its rejected answers, so there is a preference to
    learn (and the eval accuracy can move); each pair's prompt is its own group (nothing shared)."""
    from dpo_hub import embedded

    rows = embedded.sample_rows()
    pools = {
        side: sorted({w for r in rows for w in r[side][-1]["content"].split()})
        for side in ("chosen", "rejected")
    }
    pools["prompt"] = sorted({w for r in rows for w in r["prompt"].split()})
    rng = random.Random(seed)

    def text(pool: list[str], median: float, sigma: float) -> str:
        target = min(LENGTH_CAP, max(4, round(math.exp(rng.gauss(math.log(median), sigma)))))
        words = [rng.choice(pool) for _ in range(target)]
        while len(tokenizer(" ".join(words)).input_ids) > target:
            words.pop()
        return " ".join(words)

    return [
        {
            "prompt": text(pools["prompt"], PROMPT_MEDIAN, PROMPT_SIGMA) + "\n",
            "chosen": text(pools["chosen"], ANSWER_MEDIAN, ANSWER_SIGMA),
            "rejected": text(pools["rejected"], ANSWER_MEDIAN, ANSWER_SIGMA),
        }
        for _ in range(n)
    ]


def matmul_peak(dtype_name: str, seconds: float = 3.0) -> float:
    """FLOP/s of a 2048^2 matmul loop on this machine (autocast for bf16)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = 4096 if device == "cuda" else 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    dtype = getattr(torch, dtype_name)
    a, b = a.to(dtype), b.to(dtype)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------
# Children: one process per side and round
# ---------------------------------------------------------------------------------------------------------
def peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_tutorial(work: Path, steps: int) -> dict:
    """The tutorial's configuration, plain trl (the harness only times steps)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimes(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(work / "model")
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    tokenizer.pad_token = tokenizer.eos_token
    data = load_dataset(
        "json", data_files={"train": str(work / "train.jsonl"), "eval": str(work / "eval.jsonl")}
    )
    args = DPOConfig(
        output_dir=str(work / "tutorial-out"),
        per_device_train_batch_size=1,
        max_length=MAX_LENGTH,
        learning_rate=1e-4,
        beta=0.1,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=42,
        train_sampling_strategy="sequential",
    )  # both sides train the same pairs in the same order
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data["train"], processing_class=tokenizer, peft_config=lora
    )
    timer = StepTimes()
    trainer.add_callback(timer)
    train_started = time.perf_counter()
    trainer.train()
    metrics = trainer.evaluate(data["eval"])
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    return {
        "step_ends": [t - train_started for t in timer.times],
        "num_tokens": tokens,
        "ref_pass_s": 0.0,
        "eval_loss": metrics["eval_loss"],
        "eval_accuracy": metrics["eval_rewards/accuracies"],
        "wall_s": time.perf_counter() - started,
    }


def run_dpo_hub(work: Path, steps: int) -> dict:
    """dpo_hub's default recipe on the same model and data, through the public API."""
    from dpo_hub import Preferences, Recipe, train

    started = time.perf_counter()
    recipe = Recipe(
        name="bench",
        model=str(work / "model"),
        data=Preferences(dataset=str(work / "pairs.jsonl"), eval_fraction=EVAL_FRACTION, split_by="prompt"),
    )
    recipe = recipe.override(
        {
            "dpo.max_steps": steps,
            "dpo.logging_steps": 1,
            "generation.max_new_tokens": 20,
            "dpo.train_sampling_strategy": "sequential",
        }
    )
    out = train(recipe, work / f"dpo_hub-out-{os.getpid()}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = [e for e in metrics["log_history"] if "num_tokens" in e]
    return {
        "step_ends": [e["train_elapsed_s"] for e in history],
        "num_tokens": [e["num_tokens"] for e in history],
        "ref_pass_s": metrics["train"].get("reference_s", 0.0),
        # the timed warm-up computed its pair's reference before training: charged to the timed steps
        "ref_outside_steps_s": (metrics.get("plan") or {}).get("reference_s", 0.0),
        "eval_loss": metrics["eval_after"]["eval_loss"],
        "eval_accuracy": metrics["eval_after"]["eval_rewards/accuracies"],
        "wall_s": time.perf_counter() - started,
        "plan": metrics.get("plan"),
    }


EVAL_FRACTION = 0.2


def child(side: str, work: Path, steps: int) -> None:
    os.environ.setdefault(
        "DPO_HUB_CACHE", str(work / f"cache-{os.getpid()}")
    )  # the harness sets it per round
    result = (run_tutorial if side == "tutorial" else run_dpo_hub)(work, steps)
    result["peak_memory_gb"] = peak_memory_gb()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------------------
def prepare_workdir(work: Path, n_pairs: int) -> tuple[int, int]:
    """Model folder, the pairs, and the held-out split both sides use (dpo_hub's split, written out for
    trl)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpo_hub import Preferences, embedded
    from dpo_hub.data.adapters import prepare

    tokenizer = embedded.load_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    pairs = make_pairs(n_pairs, seed=0, tokenizer=tokenizer)
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    data = prepare(
        Preferences(dataset=str(work / "pairs.jsonl"), eval_fraction=EVAL_FRACTION, split_by="prompt"),
        tokenizer,
        max_length=MAX_LENGTH,
    )
    for name, split in (("train", data.train), ("eval", data.eval)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    return len(data.train), len(data.eval)


def summarize(result: dict) -> dict:
    ends, tokens = result["step_ends"], result["num_tokens"]
    per_step = [b - a for a, b in zip(ends[WARMUP_STEPS - 1 :], ends[WARMUP_STEPS:])]
    timed_tokens = tokens[-1] - tokens[WARMUP_STEPS - 1]
    timed_seconds = ends[-1] - ends[WARMUP_STEPS - 1]
    # both sides run each trained pair's reference forward inside its step (dpo_hub: once, on first use)
    timed_seconds += result.get("ref_outside_steps_s", 0.0)
    return {
        "tokens_per_s": timed_tokens / timed_seconds,
        "s_per_step": statistics.median(per_step),
        "peak_memory_gb": result["peak_memory_gb"],
        "eval_loss": result["eval_loss"],
        "eval_accuracy": result["eval_accuracy"],
        "wall_s": result["wall_s"],
        "ref_pass_s": result["ref_pass_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="6 steps, 1 round each, 30 pairs (< 8 min on 2 cores)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per run (default 20; quick 6)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="a/b rounds (default 2; quick 1)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--child", choices=("tutorial", "dpo_hub", "dpo_hub_warm"), help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else 20)
    if args.child:
        return child(args.child, Path(args.work), steps)
    import torch

    rounds = args.rounds or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="bench_dpo_") as tmp:
        work = Path(tmp)
        n_train, n_eval = prepare_workdir(work, n_pairs=max(30, steps + 12) if args.quick else steps + 40)
        peak = {"float32": matmul_peak("float32")}
        device = (
            torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"CPU, {torch.get_num_threads()} threads"
        )
        print(
            f"machine: {device}; matmul peak fp32 {peak['float32'] / 1e9:.0f} GFLOP/s; {n_train} train / "
            f"{n_eval} held-out pairs; {steps} steps per run ({WARMUP_STEPS} warm-up), {rounds} round(s)",
            flush=True,
        )
        runs: dict[str, list[dict]] = {"tutorial": [], "dpo_hub": [], "dpo_hub_warm": []}
        for round_ in range(rounds):
            # dpo_hub starts each round with an empty reference cache; dpo_hub_warm then reruns it on that
            # cache, as a rerun or a sweep point (other beta, lr or LoRA settings) does
            cold = ("dpo_hub", "dpo_hub_warm")
            for side in ("tutorial", *cold) if round_ % 2 == 0 else (*cold, "tutorial"):
                env = {**os.environ, "DPO_HUB_CACHE": str(work / f"cache-round{round_}")}
                proc = subprocess.run(
                    [sys.executable, str(HERE), "--child", side, "--work", str(work), "--steps", str(steps)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
                if proc.returncode or line is None:
                    sys.exit(f"{side} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                runs[side].append(summarize(json.loads(line.removeprefix("BENCH_RESULT "))))
                print(f"  round {round_ + 1} {side}: {runs[side][-1]}", flush=True)
    params = 124_439_808  # GPT-2-124M with the tied head counted once
    report = {
        side: {
            k: statistics.median(r[k] for r in rs) if k != "peak_memory_gb" else max(r[k] for r in rs)
            for k in rs[0]
        }
        for side, rs in runs.items()
    }
    for side in report.values():
        side["flops_per_s"] = 6 * params * side["tokens_per_s"]
        side["mfu_vs_matmul_peak"] = side["flops_per_s"] / peak["float32"]
    report["speedup_tokens_per_s"] = report["dpo_hub"]["tokens_per_s"] / report["tutorial"]["tokens_per_s"]
    report["peak_memory_ratio"] = report["dpo_hub"]["peak_memory_gb"] / report["tutorial"]["peak_memory_gb"]
    report["speedup_tokens_per_s_warm_cache"] = (
        report["dpo_hub_warm"]["tokens_per_s"] / report["tutorial"]["tokens_per_s"]
    )
    report["machine"] = {
        "device": device,
        "matmul_peak_flops": peak,
        "steps": steps,
        "rounds": rounds,
        "train_pairs": n_train,
        "eval_pairs": n_eval,
        "torch": torch.__version__,
    }
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict) -> None:
    rows = [
        ("tokens/s", "tokens_per_s", "{:.0f}"),
        ("s/step (median)", "s_per_step", "{:.2f}"),
        ("peak memory GB", "peak_memory_gb", "{:.2f}"),
        ("GFLOP/s (6NT)", "flops_per_s", "{:.3g}"),
        ("share of matmul peak", "mfu_vs_matmul_peak", "{:.0%}"),
        ("eval loss", "eval_loss", "{:.4f}"),
        ("eval reward accuracy", "eval_accuracy", "{:.3f}"),
        ("whole process s", "wall_s", "{:.0f}"),
    ]
    print(
        f"\n| {'':22} | tutorial (trl) | dpo_hub (cold cache) | b/a | dpo_hub (warm cache) | c/a |\n"
        "|---|---|---|---|---|---|"
    )
    for label, key, fmt in rows:
        a, b, c = (report[side][key] for side in ("tutorial", "dpo_hub", "dpo_hub_warm"))
        if key == "flops_per_s":
            a, b, c = a / 1e9, b / 1e9, c / 1e9
        print(
            f"| {label:22} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} | {fmt.format(c)} | {c / a:.2f} "
            "|"
            if a
            else f"| {label} | {a} | {b} | | {c} | |"
        )
    print(
        f"\nspeed-up (tokens/s): {report['speedup_tokens_per_s']:.2f}x cold, "
        f"{report['speedup_tokens_per_s_warm_cache']:.2f}x warm; peak memory ratio: "
        f"{report['peak_memory_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
