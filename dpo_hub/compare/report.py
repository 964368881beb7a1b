"""Numbers and views of a base-vs-tuned comparison: statistics, terminal table, comparison.json/.md/.png.

Pure: it computes and formats what ``compare_scoring`` and ``compare`` measured; it loads no model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_hub.artifacts.folders import write_json
from dpo_hub.artifacts.plots import comparison_figure
from dpo_hub.errors import CompareError

if TYPE_CHECKING:
    from dpo_hub.compare.scoring import PairScores

Z95 = 1.959964


@dataclass
class Comparison:
    """Base vs tuned: generations, preference metrics on pairs, judge win rate; ``to_dict`` is json-able."""

    source: str
    generations: list[dict[str, Any]] = field(default_factory=list)
    preference: dict[str, Any] | None = None  # summary statistics (``summarize``); None without pairs
    per_pair: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None  # ``summarize_judge``; None without a judge
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (tuples become lists), as written to comparison.json."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # rounding at p = 0 or 1


def _share(hits: float, n: int) -> dict[str, Any]:
    lo, hi = wilson(hits, n)
    return {
        "value": round(hits / n, 6) if n else None,
        "ci95": [round(lo, 6), round(hi, 6)],
        "count": hits,
        "n": n,
    }


def _mean(values: list[float]) -> dict[str, Any]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": round(mean, 6), "ci95": None}
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values))  # normal approximation
    return {"mean": round(mean, 6), "ci95": [round(mean - half, 6), round(mean + half, 6)]}


def summarize(scores: PairScores, beta: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summary statistics and per-pair rows from ``PairScores`` (ties count as not higher)."""
    s, n = scores, len(scores.tuned_chosen)
    if n == 0:
        raise CompareError(f"no pair left to score ({s.skipped} cut off entirely by max_length)")
    per_pair = []
    for i in range(n):
        tc, tr, bc, br, nc, nr = (
            s.tuned_chosen[i],
            s.tuned_rejected[i],
            s.base_chosen[i],
            s.base_rejected[i],
            s.chosen_tokens[i],
            s.rejected_tokens[i],
        )
        per_pair.append(
            {
                "index": s.index[i] if s.index else i,
                "tuned_chosen": tc,
                "tuned_rejected": tr,
                "base_chosen": bc,
                "base_rejected": br,
                "chosen_tokens": nc,
                "rejected_tokens": nr,
                "margin": beta * ((tc - bc) - (tr - br)),
                "chosen_kl": s.chosen_kl[i],
            }
        )

    def accuracy(model: str, per_token: bool) -> dict[str, Any]:
        def norm(r: dict, side: str) -> float:
            return r[f"{model}_{side}"] / (r[f"{side}_tokens"] if per_token else 1)

        return _share(sum(norm(r, "chosen") > norm(r, "rejected") for r in per_pair), n)

    margins = [r["margin"] for r in per_pair]
    chosen_tokens, rejected_tokens = sum(s.chosen_tokens), sum(s.rejected_tokens)
    summary = {
        "n_pairs": n,
        "skipped": s.skipped,
        "truncated": s.truncated,
        "beta": beta,
        "accuracy": {
            kind: {m: accuracy(m, kind == "per_token") for m in ("base", "tuned")}
            for kind in ("summed", "per_token")
        },
        "reward_margin": _mean(margins),
        "reward_accuracy": _share(sum(m > 0 for m in margins), n),
        "kl_per_token_chosen": round(sum(s.chosen_kl) / chosen_tokens, 6),
        "logp_drift_per_token": {
            "chosen": round((sum(s.tuned_chosen) - sum(s.base_chosen)) / chosen_tokens, 6),
            "rejected": round((sum(s.tuned_rejected) - sum(s.base_rejected)) / rejected_tokens, 6),
        },
    }
    return summary, per_pair


def summarize_judge(result: dict[str, Any]) -> dict[str, Any]:
    """Win rate of tuned over base from per-prompt rewards (win: tuned > base; a tie counts half)."""
    rows = result["scores"]
    wins, ties = sum(r["tuned"] > r["base"] for r in rows), sum(r["tuned"] == r["base"] for r in rows)
    return {
        **result,
        "wins": wins,
        "ties": ties,
        "losses": len(rows) - wins - ties,
        "win_rate": _share(wins + ties / 2, len(rows)),
        "mean_reward": {m: round(statistics.fmean(r[m] for r in rows), 6) for m in ("base", "tuned")},
    }


def _ci(share: dict[str, Any]) -> str:
    return f"{share['value']:.3f} [{share['ci95'][0]:.2f}, {share['ci95'][1]:.2f}]"


def table_rows(c: Comparison) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, change) rows shared by the terminal and markdown tables."""
    rows: list[tuple[str, str, str, str]] = []
    if p := c.preference:
        for kind, label in (("summed", "summed"), ("per_token", "per-token mean")):
            base, tuned = p["accuracy"][kind]["base"], p["accuracy"][kind]["tuned"]
            rows.append(
                (
                    f"preference accuracy ({label} log-prob)",
                    _ci(base),
                    _ci(tuned),
                    f"{tuned['value'] - base['value']:+.3f}",
                )
            )
        margin, ci = p["reward_margin"], p["reward_margin"]["ci95"]
        rows += [
            (
                f"implicit reward margin (beta {p['beta']:g})",
                "",
                f"{margin['mean']:+.4f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""),
                "",
            ),
            ("reward accuracy (margin > 0)", "", _ci(p["reward_accuracy"]), ""),
            ("KL(tuned||base) per chosen token", "", f"{p['kl_per_token_chosen']:.5f}", ""),
            ("log-prob drift per token, chosen", "", f"{p['logp_drift_per_token']['chosen']:+.4f}", ""),
            ("log-prob drift per token, rejected", "", f"{p['logp_drift_per_token']['rejected']:+.4f}", ""),
        ]
    if j := c.judge:
        rows.append(
            (f"judge win rate ({j['wins']}W/{j['ties']}T/{j['losses']}L)", "", _ci(j["win_rate"]), "")
        )
        rows.append(
            (
                "judge mean reward",
                f"{j['mean_reward']['base']:+.4f}",
                f"{j['mean_reward']['tuned']:+.4f}",
                f"{j['mean_reward']['tuned'] - j['mean_reward']['base']:+.4f}",
            )
        )
    if c.generations:
        differ = sum(g["differ"] for g in c.generations)
        rows.append(("generations that differ", "", f"{differ} of {len(c.generations)} prompt(s)", ""))
    return rows


def _title(c: Comparison) -> str:
    pairs = c.preference
    held = f"{pairs['n_pairs']} pairs ({c.settings.get('pairs') or 'given'})" if pairs else "no pairs"
    if pairs and pairs.get("skipped"):
        held += (
            f", {pairs['skipped']} skipped (prompt alone fills max_length {c.settings.get('max_length')}, "
            "the pairs training drops too)"
        )
    if pairs and pairs.get("truncated"):
        held += f", {pairs['truncated']} truncated to max_length {c.settings.get('max_length')}"
    precision = f"; scored in {c.settings['precision']}" if pairs and c.settings.get("precision") else ""
    headline = (
        f"\nreward accuracy {_ci(pairs['reward_accuracy'])} ({c.settings['headline']})"
        if pairs and c.settings.get("headline")
        else ""
    )
    return f"Base vs tuned: {c.source}; {held}{precision}; 95% CIs (Wilson for shares){headline}"


def format_table(c: Comparison) -> str:
    """The comparison as a plain-text table for the terminal."""
    header = ("metric", "base", "tuned", "change")
    rows = [header, *table_rows(c)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [_title(c), ""] + [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(3, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_side_by_side(rows: list[dict[str, Any]], width: int = 100) -> str:
    """Plain-text view of base vs tuned answers for the terminal and ``generations.md``."""
    lines = []
    for row in rows:
        lines += [
            f"### {row['prompt']}",
            "",
            "**base**:",
            "",
            row["base"].strip() or "(empty)",
            "",
            "**tuned**:",
            "",
            row["tuned"].strip() or "(empty)",
            "",
            f"_answers differ: {'yes' if row['differ'] else 'no'}_",
            "",
        ]
    return "\n".join(line[: width * 4] for line in lines)


def format_markdown(c: Comparison) -> str:
    """comparison.md: the table, then the generations side by side."""
    lines = [f"# {_title(c)}", "", "| metric | base | tuned | change |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(cell.replace('|', '&#124;') for cell in row)} |" for row in table_rows(c)]
    if c.preference:
        lines += [
            "",
            "Accuracy: share of pairs where the model gives the chosen response a higher log-probability "
            "than the rejected one (ties count as not higher). Margin: beta * [(tuned - base) log-prob of "
            "chosen - (tuned - base) of rejected], DPOTrainer's rewards/margins (its eval log averages batch "
            "means, so a short last batch moves it slightly).",
            "",
            "![](comparison.png)",
        ]
    if c.generations:
        lines += ["", "## Generations (identical seeded settings)", "", format_side_by_side(c.generations)]
    return "\n".join(lines) + "\n"


def write_outputs(c: Comparison, output_dir: Path) -> list[Path]:
    """Write comparison.json, comparison.md and comparison.png into ``output_dir``; return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"comparison.{ext}" for ext in ("json", "md", "png")]
    write_json(paths[0], c.to_dict())
    paths[1].write_text(format_markdown(c), encoding="utf-8")
    comparison_figure(c.preference, [r["margin"] for r in c.per_pair], paths[2])
    return paths
