"""Time base-vs-tuned scoring of 100 preference pairs on the embedded tiny GPT-2 (one model, adapter toggled).

Run: python benchmarks/compare_speed.py [--pairs 100] [--batch-size 16]
Prints seconds for scoring (base + tuned, one forward per pair side each) and pairs per second.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import get_peft_model

from dpo_hub import LoraPreset, embedded
from dpo_hub.compare.scoring import score_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    rows = embedded.sample_rows()[: args.pairs]
    pairs = [
        {
            "prompt": r["prompt"],
            "chosen": r["chosen"][-1]["content"],
            "rejected": r["rejected"][-1]["content"],
        }
        for r in rows
    ]
    model = embedded.build_model()
    model = get_peft_model(model, LoraPreset.gpt2_attention().to_peft_config(model)).eval()
    tokenizer = embedded.load_tokenizer()
    score_pairs(model, tokenizer, pairs[:4], batch_size=args.batch_size)  # warm-up
    started = time.perf_counter()
    score_pairs(model, tokenizer, pairs, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    print(
        f"{len(pairs)} pairs, base + tuned, {torch.get_num_threads()} threads: {seconds:.2f} s "
        f"({len(pairs) / seconds:.1f} pairs/s)"
    )


if __name__ == "__main__":
    main()
