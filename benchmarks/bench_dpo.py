"""dpo_hub's default recipe vs plain trl, as the tutorial runs it and as a knowledgeable user would set it.

Run:  python benchmarks/bench_dpo.py [--quick] [--steps N] [--rounds R] [--json FILE]
      python benchmarks/bench_dpo.py --sweep [--shapes gpt2-124m,smollm2-135m] [--lengths 512,1024]
                                     [--json FILE] [--plot FILE.png]

Sides (each in its own process, alternated so load on the machine hits all alike):
(a) ``tutorial``: GPT-2 + LoRA r=4 on c_attn/c_proj, batch 1, fp32 on CPU, reference = the base with the
    adapter disabled, every other setting trl's default (gradient checkpointing, eval batch 8, dropout off).
(b) ``trl_best_fp32`` / ``trl_best_bf16``: plain trl as a knowledgeable user sets it: the same LoRA and data,
    no gradient checkpointing, ``precompute_ref_log_probs=True`` (trl's own reference pass and cache), dropout
    off, eval batch 2, dpo_hub's learning-rate schedule (2 warm-up steps); in fp32 and (where the CPU or GPU
    computes bf16) bf16 autocast. The faster one is the peer (``trl_best``). trl's up-front reference pass
    over the train split is charged to the timed steps pro rata (its seconds x timed pairs / train pairs), as
    each side's reference forward is counted.
(c) ``dpo_hub``: the default recipe (``dpo_hub.Recipe()`` with this model and data) through ``dpo_hub.train``,
    which also evaluates before training, scores base vs tuned and writes its run folder; with an empty
    reference cache (cold), then rerun on the cache it filled (``dpo_hub_warm``: a rerun or a sweep point).
    ``dpo_hub_fp32`` / ``dpo_hub_bf16`` (``--sides``) force ``dpo.precision``; ``dpo_hub_bf16_fp32w`` is
    ``dpo_hub_bf16`` with the frozen base weights kept in fp32 (``dpo.bf16_base_weights: false``), to measure
    that lever.
Paths (a) and (b) are plain trl/peft/transformers: no dpo_hub code runs in them.
All sides train the same pairs in the same order (``train_sampling_strategy="sequential"``).
Printed per side: non-padding tokens trained per second (trl's ``num_tokens`` over the timed steps, reference
passes included), seconds per optimizer step (median after warm-up), peak memory of the whole process (RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU; evaluation included), achieved FLOP/s (6 x parameters x
tokens / s, the usual convention) against the matmul peak of the precision that side ran in, measured in this
run, the final eval loss and reward accuracy on the same held-out pairs, and the whole process's wall time;
then the ratios.

``--sweep`` runs ``trl_best`` (one precision, ``--trl-precision``) and ``dpo_hub`` over model shapes and
``max_length``s and writes a table and a plot. Shapes (seeded random weights, built offline from the published
dimensions; no weights download): ``gpt2-124m`` (``GPT2Config()``), ``smollm2-135m`` and ``smollm2-360m``
(Llama architecture; vocabulary = the GPT-2 tokenizer's 50,257 instead of SmolLM2's 49,152, +2% head cost, as
the SmolLM2 tokenizer cannot be downloaded here). GPT-2 gets the default recipe's LoRA (c_attn, c_proj, r 4),
Llama shapes the ``all_linear`` preset (r 8) on every side.
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
EVAL_FRACTION = 0.2

# Token lengths (GPT-2 tokenizer) of UltraFeedback pairs, modelled as log-normal: prompts median 90 tokens
# (sigma 0.9, so a long tail of pasted documents), answers median 220 (sigma 0.6), capped at 480. An
# approximation of the binarized UltraFeedback prompts/answers (UltraChat, ShareGPT, Evol-Instruct, FLAN
# prompts; 4 model answers each) written for this benchmark: the dataset itself cannot be downloaded here.
# With max_length 512 about a fifth of the pairs are cut, as trl cuts real UltraFeedback pairs. At a longer
# max_length every length (medians and cap) scales with it: the same share of pairs is cut.
PROMPT_MEDIAN, PROMPT_SIGMA, ANSWER_MEDIAN, ANSWER_SIGMA, LENGTH_CAP = 90, 0.9, 220, 0.6, 480

# Published dimensions of the shapes the sweep runs (random weights: FLOPs and memory are the real models').
SHAPES = {
    "gpt2-124m": ("gpt2", {}),
    "smollm2-135m": (
        "llama",
        dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3, rope_theta=100000.0, max_position_embeddings=8192),
    ),
    "smollm2-360m": (
        "llama",
        dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
             num_key_value_heads=5, rope_theta=100000.0, max_position_embeddings=8192),
    ),
}  # fmt: skip
TRL_SIDES = ("tutorial", "trl_best_fp32", "trl_best_bf16")
SIDES = (*TRL_SIDES, "dpo_hub", "dpo_hub_warm", "dpo_hub_fp32", "dpo_hub_bf16", "dpo_hub_bf16_fp32w")


def make_pairs(n: int, seed: int, tokenizer, max_length: int = MAX_LENGTH) -> list[dict]:
    """``n`` pairs of word text with UltraFeedback-like token lengths (scaled to ``max_length``). Chosen
    answers draw words from the embedded sample's chosen answers, rejected ones from its rejected answers, so
    there is a preference to learn (and the eval accuracy can move); each pair's prompt is its own group."""
    from dpo_hub import embedded

    rows = embedded.sample_rows()
    pools = {
        side: sorted({w for r in rows for w in r[side][-1]["content"].split()})
        for side in ("chosen", "rejected")
    }
    pools["prompt"] = sorted({w for r in rows for w in r["prompt"].split()})
    rng = random.Random(seed)
    scale = max_length / MAX_LENGTH

    def text(pool: list[str], median: float, sigma: float) -> str:
        draw = math.exp(rng.gauss(math.log(median * scale), sigma))
        target = min(round(LENGTH_CAP * scale), max(4, round(draw)))
        words = [rng.choice(pool) for _ in range(target)]
        while (excess := len(tokenizer(" ".join(words)).input_ids) - target) > 0:
            del words[-max(1, excess // 2) :]
        return " ".join(words)

    return [
        {
            "prompt": text(pools["prompt"], PROMPT_MEDIAN, PROMPT_SIGMA) + "\n",
            "chosen": text(pools["chosen"], ANSWER_MEDIAN, ANSWER_SIGMA),
            "rejected": text(pools["rejected"], ANSWER_MEDIAN, ANSWER_SIGMA),
        }
        for _ in range(n)
    ]


def bf16_available() -> bool:
    """Whether bf16 is native here (a GPU with bf16, or a CPU with AVX-512 BF16/AMX): then bf16 sides run."""
    import torch

    from dpo_hub.runtime import cpu_has_bf16

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()


def matmul_peak(dtype_name: str, seconds: float = 3.0) -> float:
    """FLOP/s of a 2048^2 matmul loop on this machine in ``dtype_name`` (float32 or bfloat16)."""
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


def run_trl(work: Path, steps: int, side: str) -> dict:
    """Plain trl: the tutorial's configuration, or trl set up well (``trl_best_*``); the harness only times
    steps and trl's reference pass."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    spec = json.loads((work / "bench.json").read_text())
    best = side.startswith("trl_best")
    bf16 = side.endswith("bf16")

    class StepTimes(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    class TimedReference(DPOTrainer):
        reference_s: dict[str, float] = {}

        def _precompute_ref_logps(self, dataset, name, batch_size):
            started = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            self.reference_s[name] = self.reference_s.get(name, 0.0) + time.perf_counter() - started
            return out

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(work / "model")
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    tokenizer.pad_token = tokenizer.eos_token
    data = load_dataset(
        "json", data_files={"train": str(work / "train.jsonl"), "eval": str(work / "eval.jsonl")}
    )
    tuned = (
        {
            "gradient_checkpointing": False,
            "precompute_ref_log_probs": True,
            "per_device_eval_batch_size": 2,
            "warmup_steps": 2,  # the schedule of dpo_hub's default recipe: eval losses compare like for like
        }
        if best
        else {}
    )
    args = DPOConfig(
        output_dir=str(work / f"{side}-out"),
        per_device_train_batch_size=1,
        max_length=spec["max_length"],
        learning_rate=1e-4,
        beta=0.1,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=42,
        train_sampling_strategy="sequential",  # every side trains the same pairs in the same order
        **tuned,  # disable_dropout=True is trl's default: model and LoRA dropout off on every side
    )
    lora = LoraConfig(task_type="CAUSAL_LM", **spec["lora"])
    trainer = TimedReference(
        model=model, args=args, train_dataset=data["train"], processing_class=tokenizer, peft_config=lora
    )
    timer = StepTimes()
    trainer.add_callback(timer)
    train_started = time.perf_counter()
    trainer.train()
    metrics = trainer.evaluate(data["eval"])
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    train_ref_s = trainer.reference_s.get("train", 0.0)
    return {
        "precision": "bf16" if bf16 else "fp32",
        "step_ends": [t - train_started for t in timer.times],
        "num_tokens": tokens,
        "ref_pass_s": sum(trainer.reference_s.values()),
        # trl's up-front pass over the train split, charged pro rata to the pairs of the timed steps
        "ref_outside_steps_s": train_ref_s * (steps - WARMUP_STEPS) / len(data["train"]),
        "eval_loss": metrics["eval_loss"],
        "eval_accuracy": metrics["eval_rewards/accuracies"],
        "wall_s": time.perf_counter() - started,
    }


def run_dpo_hub(work: Path, steps: int, side: str) -> dict:
    """dpo_hub's default recipe on the same model and data, through the public API."""
    from dpo_hub import Preferences, Recipe, train

    spec = json.loads((work / "bench.json").read_text())
    started = time.perf_counter()
    recipe = Recipe(
        name="bench",
        model=str(work / "model"),
        data=Preferences(dataset=str(work / "pairs.jsonl"), eval_fraction=EVAL_FRACTION, split_by="prompt"),
    )
    overrides = {
        "dpo.max_steps": steps,
        "dpo.logging_steps": 1,
        "dpo.max_length": spec["max_length"],
        "generation.max_new_tokens": 20,
        "dpo.train_sampling_strategy": "sequential",
    }
    if spec["lora_preset"] != "gpt2_attention":
        overrides["lora.preset"] = spec["lora_preset"]
    if side in ("dpo_hub_fp32", "dpo_hub_bf16"):
        overrides["dpo.precision"] = side.removeprefix("dpo_hub_")
    if side == "dpo_hub_bf16_fp32w":
        overrides.update({"dpo.precision": "bf16", "dpo.bf16_base_weights": False})
    out = train(recipe.override(overrides), work / f"dpo_hub-out-{os.getpid()}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = [e for e in metrics["log_history"] if "num_tokens" in e]
    return {
        "precision": metrics["precision"]["resolved"],
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


def child(side: str, work: Path, steps: int) -> None:
    os.environ.setdefault("DPO_HUB_CACHE", str(work / f"cache-{os.getpid()}"))  # the harness sets it
    result = (run_trl if side in TRL_SIDES else run_dpo_hub)(work, steps, side)
    result["peak_memory_gb"] = peak_memory_gb()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------------------
def build_model(shape: str):
    """Seeded random weights of ``shape``; the LoRA preset every side uses on it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from dpo_hub import embedded

    family, dims = SHAPES[shape]
    torch.manual_seed(0)
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config()), "gpt2_attention"
    vocab = len(embedded.load_tokenizer())
    config = LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, **dims)
    return LlamaForCausalLM(config), "all_linear"


def prepare_workdir(work: Path, n_pairs: int, shape: str = "gpt2-124m", max_length: int = MAX_LENGTH):
    """Model folder, the pairs, the held-out split every side uses (dpo_hub's split, written out for trl) and
    ``bench.json`` (shape, length, LoRA, parameter count)."""
    from dpo_hub import Preferences, embedded
    from dpo_hub.config.presets import LORA_PRESETS
    from dpo_hub.data.adapters import prepare

    tokenizer = embedded.load_tokenizer()
    model, lora_preset = build_model(shape)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    peft = LORA_PRESETS[lora_preset]().to_peft_config(model)
    lora = {
        "r": peft.r,
        "lora_alpha": peft.lora_alpha,
        "lora_dropout": peft.lora_dropout,
        "target_modules": peft.target_modules
        if isinstance(peft.target_modules, str)
        else sorted(peft.target_modules),
        "fan_in_fan_out": peft.fan_in_fan_out,
    }
    pairs = make_pairs(n_pairs, seed=0, tokenizer=tokenizer, max_length=max_length)
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    data = prepare(
        Preferences(dataset=str(work / "pairs.jsonl"), eval_fraction=EVAL_FRACTION, split_by="prompt"),
        tokenizer,
        max_length=max_length,
    )
    for name, split in (("train", data.train), ("eval", data.eval)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    spec = {
        "shape": shape,
        "max_length": max_length,
        "lora_preset": lora_preset,
        "lora": lora,
        "params": sum(p.numel() for p in model.parameters()),  # a tied head counted once
        "train_pairs": len(data.train),
        "eval_pairs": len(data.eval),
    }
    (work / "bench.json").write_text(json.dumps(spec))
    return spec


def summarize(result: dict) -> dict:
    ends, tokens = result["step_ends"], result["num_tokens"]
    per_step = [b - a for a, b in zip(ends[WARMUP_STEPS - 1 :], ends[WARMUP_STEPS:])]
    timed_tokens = tokens[-1] - tokens[WARMUP_STEPS - 1]
    timed_seconds = ends[-1] - ends[WARMUP_STEPS - 1]
    # every side's reference forward of the trained pairs counts: inside the step (tutorial; dpo_hub once,
    # on first use), or before training (trl_best's pass, pro rata; dpo_hub's timed warm-up pair)
    timed_seconds += result.get("ref_outside_steps_s", 0.0)
    return {
        "precision": result["precision"],
        "tokens_per_s": timed_tokens / timed_seconds,
        "s_per_step": statistics.median(per_step),
        "peak_memory_gb": result["peak_memory_gb"],
        "eval_loss": result["eval_loss"],
        "eval_accuracy": result["eval_accuracy"],
        "wall_s": result["wall_s"],
        "ref_pass_s": result["ref_pass_s"],
    }


def run_sides(work: Path, sides: list[str], steps: int, rounds: int, flip: int = 0) -> dict[str, list[dict]]:
    """Each side in its own process, in turn, the order reversed every other round (and cell: ``flip``)."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(rounds):
        # each side starts each round with an empty reference cache; dpo_hub_warm then reruns dpo_hub on
        # that side's cache, as a rerun or a sweep point (other beta, lr or LoRA settings) does
        order = sides if (round_ + flip) % 2 == 0 else list(reversed(sides))
        if "dpo_hub_warm" in order and "dpo_hub" in order:  # warm after cold in every round
            order = [s for s in order if s != "dpo_hub_warm"]
            order.insert(order.index("dpo_hub") + 1, "dpo_hub_warm")
        for side in order:
            cache = "dpo_hub" if side == "dpo_hub_warm" else side  # every other side starts cold
            env = {**os.environ, "DPO_HUB_CACHE": str(work / f"cache-round{round_}-{cache}")}
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
    return runs


def report_of(runs: dict[str, list[dict]], peak: dict[str, float], params: int) -> dict:
    """Median over rounds per side (peak memory: the max), FLOP/s against the peak of the side's precision,
    and the ratios: dpo_hub vs the tutorial and vs the faster trl_best."""
    report: dict = {}
    for side, rs in runs.items():
        report[side] = {
            k: (max if k == "peak_memory_gb" else statistics.median)(r[k] for r in rs)
            for k in rs[0]
            if k != "precision"
        }
        precision = rs[0]["precision"]
        report[side]["precision"] = precision
        report[side]["flops_per_s"] = 6 * params * report[side]["tokens_per_s"]
        dtype = "bfloat16" if precision == "bf16" else "float32"
        report[side]["matmul_peak_flops"] = peak.get(dtype)
        report[side]["mfu_vs_matmul_peak"] = (
            report[side]["flops_per_s"] / peak[dtype] if dtype in peak else None
        )
    ours = report.get("dpo_hub")
    if ours and "tutorial" in report:
        tutorial = report["tutorial"]
        report["speedup_tokens_per_s"] = ours["tokens_per_s"] / tutorial["tokens_per_s"]
        report["peak_memory_ratio"] = ours["peak_memory_gb"] / tutorial["peak_memory_gb"]
        report["end_to_end_speedup_vs_tutorial"] = tutorial["wall_s"] / ours["wall_s"]
        if "dpo_hub_warm" in report:
            report["speedup_tokens_per_s_warm_cache"] = (
                report["dpo_hub_warm"]["tokens_per_s"] / tutorial["tokens_per_s"]
            )
    best = [s for s in report if s.startswith("trl_best")]
    if ours and best:
        peer = max(best, key=lambda s: report[s]["tokens_per_s"])
        report["trl_best"] = peer
        report["speedup_vs_trl_best_tokens_per_s"] = ours["tokens_per_s"] / report[peer]["tokens_per_s"]
        report["peak_memory_ratio_vs_trl_best"] = ours["peak_memory_gb"] / report[peer]["peak_memory_gb"]
        report["end_to_end_speedup_vs_trl_best"] = report[peer]["wall_s"] / ours["wall_s"]
    return report


def measure_peaks() -> dict[str, float]:
    peak = {"float32": matmul_peak("float32")}
    if bf16_available():
        peak["bfloat16"] = matmul_peak("bfloat16")
    return peak


def device_name() -> str:
    import torch

    return (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )


def machine_info(peak: dict[str, float], **more) -> dict:
    import torch

    return {
        "device": device_name(),
        "cpu_bf16": bf16_available(),
        "matmul_peak_flops": peak,
        "load_average_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        **more,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="6 steps, 1 round each, 30 pairs (58 min on 2 cores under load 5-14)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per run (default 20; quick 6; sweep 5)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of all sides (default 2; quick, sweep 1)"
    )
    parser.add_argument(
        "--sides",
        default=None,
        help=f"comma-separated sides of {','.join(SIDES)} (default: tutorial, trl_best_fp32, trl_best_bf16 "
        "where bf16 is native, dpo_hub, dpo_hub_warm)",
    )
    parser.add_argument("--sweep", action="store_true", help="trl_best vs dpo_hub over shapes and lengths")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="sweep: comma-separated shapes")
    parser.add_argument("--lengths", default="512,1024,2048", help="sweep: comma-separated max_length values")
    parser.add_argument(
        "--trl-precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="sweep: trl_best's precision (auto: bf16 where native, the faster in the --quick run)",
    )
    parser.add_argument(
        "--json", default=None, help="write the results to this file (sweep: after each cell)"
    )
    parser.add_argument("--plot", default=None, help="sweep: write a PNG plot of tokens/s and peak memory")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, Path(args.work), args.steps)
    if args.sweep:
        return sweep(args)
    steps = args.steps or (6 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    default = ["tutorial", "trl_best_fp32", *(["trl_best_bf16"] if bf16_available() else [])]
    sides = args.sides.split(",") if args.sides else [*default, "dpo_hub", "dpo_hub_warm"]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        parser.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    with tempfile.TemporaryDirectory(prefix="bench_dpo_") as tmp:
        work = Path(tmp)
        spec = prepare_workdir(work, n_pairs=max(30, steps + 12) if args.quick else steps + 40)
        peak = measure_peaks()
        print(
            f"machine: {device_name()}; matmul peak "
            + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items())
            + f"; load average {os.getloadavg()}; {spec['train_pairs']} train / "
            f"{spec['eval_pairs']} held-out pairs; {steps} steps per run ({WARMUP_STEPS} warm-up), "
            f"{rounds} round(s)",
            flush=True,
        )
        start = {
            "load_average_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        runs = run_sides(work, sides, steps, rounds)
    report = report_of(runs, peak, spec["params"])
    report["machine"] = machine_info(
        peak,
        **start,
        steps=steps,
        rounds=rounds,
        train_pairs=spec["train_pairs"],
        eval_pairs=spec["eval_pairs"],
        load_average_end=os.getloadavg(),
        command=" ".join(sys.argv),
    )
    print_table(report, sides)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict, sides: list[str]) -> None:
    rows = [
        ("precision", "precision", "{}"),
        ("tokens/s", "tokens_per_s", "{:.0f}"),
        ("s/step (median)", "s_per_step", "{:.2f}"),
        ("peak memory GB", "peak_memory_gb", "{:.2f}"),
        ("GFLOP/s (6NT)", "flops_per_s", "{:.3g}"),
        ("share of matmul peak", "mfu_vs_matmul_peak", "{:.0%}"),
        ("eval loss", "eval_loss", "{:.4f}"),
        ("eval reward accuracy", "eval_accuracy", "{:.3f}"),
        ("whole process s", "wall_s", "{:.0f}"),
    ]
    print("\n| | " + " | ".join(sides) + " |\n|---|" + "---|" * len(sides))
    for label, key, fmt in rows:
        cells = []
        for side in sides:
            value = report[side][key]
            value = value / 1e9 if key == "flops_per_s" else value
            cells.append("" if value is None else fmt.format(value))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for key in (
        "speedup_tokens_per_s",
        "speedup_tokens_per_s_warm_cache",
        "peak_memory_ratio",
        "end_to_end_speedup_vs_tutorial",
        "trl_best",
        "speedup_vs_trl_best_tokens_per_s",
        "peak_memory_ratio_vs_trl_best",
        "end_to_end_speedup_vs_trl_best",
    ):
        if key in report:
            value = report[key]
            print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


# ---------------------------------------------------------------------------------------------------------
# Sweep: shapes x lengths
# ---------------------------------------------------------------------------------------------------------
def sweep(args: argparse.Namespace) -> None:
    steps, rounds = args.steps or 5, args.rounds or 1
    shapes, lengths = args.shapes.split(","), [int(n) for n in args.lengths.split(",")]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        sys.exit(f"--shapes: unknown {unknown}; choose from {', '.join(SHAPES)}")
    trl_precision = args.trl_precision
    if trl_precision == "auto":
        trl_precision = "bf16" if bf16_available() else "fp32"
    sides = [f"trl_best_{trl_precision}", "dpo_hub"]
    peak = measure_peaks()
    result = {
        "machine": machine_info(peak, steps=steps, rounds=rounds, command=" ".join(sys.argv)),
        "cells": [],
    }
    print(f"machine: {result['machine']}", flush=True)
    for shape in shapes:
        for max_length in lengths:
            context = SHAPES[shape][1].get("max_position_embeddings", 1024)  # GPT2Config(): 1024 positions
            if max_length > context:
                print(f"cell {shape} @ {max_length}: skipped, the model has {context} positions", flush=True)
                result["cells"].append(
                    {"shape": shape, "max_length": max_length, "skipped": f"{context} positions"}
                )
                continue
            with tempfile.TemporaryDirectory(prefix="bench_dpo_sweep_") as tmp:
                work = Path(tmp)
                spec = prepare_workdir(work, n_pairs=steps + 10, shape=shape, max_length=max_length)
                load = os.getloadavg()
                print(f"cell {shape} @ {max_length} (load average {load})", flush=True)
                runs = run_sides(work, sides, steps, rounds, flip=len(result["cells"]))
            report = report_of(runs, peak, spec["params"])
            cell = {
                "shape": shape,
                "max_length": max_length,
                "params": spec["params"],
                "load_average": load,
                **{side: report[side] for side in sides},
                **{k: report[k] for k in ("trl_best", "speedup_vs_trl_best_tokens_per_s",
                                          "peak_memory_ratio_vs_trl_best")},
            }  # fmt: skip
            result["cells"].append(cell)
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print_sweep(result, sides)
    if args.plot:
        plot_sweep(result, sides, Path(args.plot))


def print_sweep(result: dict, sides: list[str]) -> None:
    trl, ours = sides
    print(
        f"\n| shape | max_length | {trl} tokens/s | dpo_hub tokens/s | speed-up | {trl} peak GB | "
        "dpo_hub peak GB | memory ratio | precision (dpo_hub) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for c in result["cells"]:
        if "skipped" in c:
            print(f"| {c['shape']} | {c['max_length']} | skipped: {c['skipped']} |||||||")
            continue
        print(
            f"| {c['shape']} | {c['max_length']} | {c[trl]['tokens_per_s']:.0f} | "
            f"{c[ours]['tokens_per_s']:.0f} | **{c['speedup_vs_trl_best_tokens_per_s']:.2f}** | "
            f"{c[trl]['peak_memory_gb']:.2f} | {c[ours]['peak_memory_gb']:.2f} | "
            f"{c['peak_memory_ratio_vs_trl_best']:.2f} | {c[ours]['precision']} |"
        )


def plot_sweep(result: dict, sides: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    shapes = sorted({c["shape"] for c in result["cells"]}, key=list(SHAPES).index)
    for shape in shapes:
        cells = [c for c in result["cells"] if c["shape"] == shape and "skipped" not in c]
        lengths = [c["max_length"] for c in cells]
        for side, style in zip(sides, ("--o", "-s")):
            speed.plot(lengths, [c[side]["tokens_per_s"] for c in cells], style, label=f"{shape} {side}")
            memory.plot(lengths, [c[side]["peak_memory_gb"] for c in cells], style, label=f"{shape} {side}")
    for axis, label in ((speed, "tokens/s (trained, reference included)"), (memory, "peak memory GB (RSS)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("max_length")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    speed.legend(fontsize=7)
    fig.suptitle(f"dpo_hub vs trl set up well; {result['machine']['device']}, {result['machine']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
