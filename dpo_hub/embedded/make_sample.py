"""Build the bundled preference sample (``sample.jsonl``) deterministically.

Provenance: every text is written by the dpo_hub authors from the templates below (no third-party
data); the file is released with the package under its licence. Rows follow the exact schema of
``argilla/ultrafeedback-binarized-preferences-cleaned`` (``source``, ``prompt``, ``chosen`` and
``rejected`` as message lists, ``chosen-rating``/``rejected-rating``, ``chosen-model``/``rejected-model``).

The chosen answers are polite, specific and on topic; the rejected ones are dismissive, rude or
off topic. The contrast is learnable by a tiny model and generalises to held-out topics, so the
eval split measures whether DPO moved the model.

Regenerate with ``python -m dpo_hub.embedded.make_sample`` (a test checks the file matches).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SAMPLE_PATH = Path(__file__).with_name("sample.jsonl")
N_ROWS = 400

TASKS = [
    "bake bread at home", "learn to swim", "fix a flat bike tyre", "start running", "save money each month",
    "grow tomatoes", "write a cover letter", "learn a new language", "sleep better", "clean a cast iron pan",
    "make a budget", "plant a tree", "study for an exam", "paint a room", "brew green tea",
    "take better photos", "reduce stress", "cook rice", "train a puppy", "start a journal",
    "prepare for an interview", "keep houseplants alive", "learn to juggle", "make pancakes", "back up my files",
    "write a short poem", "learn chess", "organise my desk", "meditate", "change a light bulb",
    "make new friends", "compost kitchen waste", "improve my handwriting", "speak in public", "read more books",
    "bake cookies", "tie a tie", "wash a wool sweater", "learn to draw", "plan a picnic",
    "stretch after exercise", "make soup", "learn basic first aid", "fold a paper crane", "set up a bird feeder",
    "recycle old clothes", "practise the guitar", "write a thank you note", "make a smoothie", "stay hydrated",
]
QUESTIONS = [
    "How do I {t}?", "What is a good way to {t}?", "Can you help me {t}?", "Any tips to {t}?",
    "I want to {t}. Where should I start?", "What should I know before I try to {t}?",
    "Please explain how to {t}.", "What is the easiest way to {t}?",
]
ETHICS = [
    "Is eating animals cruel?", "Is it wrong to lie to a friend?", "Should I return a lost wallet?",
    "Is it fair to copy homework?", "Is it okay to skip voting?", "Should I tell my boss about a mistake?",
    "Is it rude to be late?", "Should people help strangers?",
]
STEPS = [
    "start small", "go slowly", "make a simple plan", "practise a little every day", "ask a friend to join you",
    "keep notes", "take short breaks", "gather what you need first", "set a clear goal", "be patient with yourself",
]
CHOSEN = [
    "Sure! To {t}, {a}, then {b}. Good luck, I hope this helps.",
    "Great question. A good way to {t} is to {a} and {b}. You can do it!",
    "Happy to help. First {a}. Next, {b}. That is a kind and simple way to {t}.",
    "Of course. To {t}, {a}. After that, {b}. I hope this is useful.",
    "Thanks for asking! {A}, and {b}. Step by step you will {t}.",
]
CHOSEN_ETHICS = [
    "That is a thoughtful question. Many people see it differently, so it helps to {a} and {b}.",
    "Good question. Kind people often disagree here; a fair answer is to {a} and {b}.",
    "Thanks for asking. It depends on your values, so {a}, then {b}. I hope this helps.",
]
REJECTED = [
    "No idea. Figure it out yourself.",
    "Why would you even ask that? Whatever.",
    "That is a stupid question. Stop asking me.",
    "Not my problem. Go away.",
    "Bananas are yellow and the moon is far away.",
    "Ugh, just search it. I am not your teacher.",
    "Who cares. Nobody needs to {t} anyway.",
    "Do it wrong, it does not matter. Bye.",
]
HELPFUL_MODELS = ["dpo-hub-template-helpful", "dpo-hub-template-kind"]
UNHELPFUL_MODELS = ["dpo-hub-template-dismissive", "dpo-hub-template-offtopic"]


def _messages(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]


def build_rows(n_rows: int = N_ROWS, seed: int = 0) -> list[dict]:
    """Return ``n_rows`` unique preference rows in UltraFeedback-binarized schema."""
    rng = random.Random(seed)
    candidates = [(q.format(t=t), t) for t in TASKS for q in QUESTIONS]
    candidates += [(e, "think it through") for e in ETHICS]
    rng.shuffle(candidates)
    rows = []
    for prompt, task in candidates[:n_rows]:
        a, b = rng.sample(STEPS, 2)
        template = rng.choice(CHOSEN_ETHICS if prompt in ETHICS else CHOSEN)
        chosen = template.format(t=task, a=a, b=b, A=a[0].upper() + a[1:])
        rejected = rng.choice(REJECTED).format(t=task)
        rows.append({
            "source": "dpo_hub_embedded",
            "prompt": prompt,
            "chosen": _messages(prompt, chosen),
            "chosen-rating": float(rng.choice([4.5, 5.0])),
            "chosen-model": rng.choice(HELPFUL_MODELS),
            "rejected": _messages(prompt, rejected),
            "rejected-rating": float(rng.choice([1.0, 1.5, 2.0])),
            "rejected-model": rng.choice(UNHELPFUL_MODELS),
        })
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    SAMPLE_PATH.write_text(render(build_rows()), encoding="utf-8")
    print(f"wrote {N_ROWS} rows to {SAMPLE_PATH}")
