"""Dataset adapters on hand-made rows of the real schemas, bad rows included."""

from __future__ import annotations

import json
import re
from collections import Counter

import datasets
import pytest

from dpo_hub import HHRLHF, DataError, Preferences, UltraFeedback, embedded, prepare
from dpo_hub.data.adapters import convert
from dpo_hub.embedded import make_sample

ARGILLA_COLUMNS = {
    "source",
    "prompt",
    "chosen",
    "chosen-rating",
    "chosen-model",
    "rejected",
    "rejected-rating",
    "rejected-model",
}
SAMPLE_COLUMNS = ARGILLA_COLUMNS | {"group"}  # the sample adds its template family


def uf_row(prompt, chosen, rejected, **extra):
    def msgs(answer):
        return (
            None
            if answer is None
            else [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]
        )

    return {
        "source": "test",
        "prompt": prompt,
        "chosen": msgs(chosen),
        "chosen-rating": 5.0,
        "chosen-model": "a",
        "rejected": msgs(rejected),
        "rejected-rating": 1.0,
        "rejected-model": "b",
        **extra,
    }


GOOD = [uf_row(f"Question {i}?", f"Helpful answer {i}.", f"Rude answer {i}.") for i in range(8)]
BAD = [
    uf_row("Q empty?", "", "no"),
    uf_row("Q same?", "same", "same"),
    uf_row("Q missing?", None, "x"),
    uf_row("", "a", "b"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return embedded.load_tokenizer()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_embedded_tokenizer_is_gpt2(tokenizer):
    assert tokenizer("Hello world").input_ids == [15496, 995]
    assert len(tokenizer) == 50257 and tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert "MIT License" in (embedded.TOKENIZER_DIR / "LICENSE").read_text()


def test_embedded_sample_has_ultrafeedback_schema_and_is_reproducible():
    rows = embedded.sample_rows()
    assert len(rows) == make_sample.N_ROWS and all(set(r) == SAMPLE_COLUMNS for r in rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert embedded.SAMPLE_PATH.read_text() == make_sample.render(make_sample.build_rows()), (
        "regenerate sample.jsonl"
    )


def test_ultrafeedback_text_drops_bad_rows_with_counts(tmp_path, tokenizer, caplog):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD + BAD)
    with caplog.at_level("WARNING", logger="dpo_hub"):
        data = prepare(UltraFeedback(dataset=str(path), limit=None, eval_fraction=0.25), tokenizer)
    assert len(data.train) + len(data.eval) == len(GOOD) and len(data.eval) == 2
    assert data.dropped == {
        "chosen is empty": 1,
        "prompt is empty": 1,
        "chosen identical to rejected": 1,
        "chosen is missing": 1,
    }
    assert data.examples["chosen is missing"]["row"] == 10
    assert "dropped 1 row(s): chosen is empty" in caplog.text
    pair = next(p for p in data.train if p["prompt"] == "Question 0?\n")
    assert pair == {"prompt": "Question 0?\n", "chosen": "Helpful answer 0.", "rejected": "Rude answer 0."}


def test_ultrafeedback_chat_without_template(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD)
    pairs, dropped, _ = convert(
        UltraFeedback(dataset=str(path), format="chat"), datasets.Dataset.from_list(GOOD), tokenizer
    )
    assert not dropped
    assert pairs[0] == {
        "prompt": "User: Question 0?\n\nAssistant:",
        "chosen": " Helpful answer 0.",
        "rejected": " Rude answer 0.",
    }


def test_ultrafeedback_chat_applies_the_tokenizers_template(tokenizer):
    tokenizer = embedded.load_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    pairs, _, _ = convert(UltraFeedback(format="chat"), GOOD[:1], tokenizer)
    assert pairs[0]["prompt"] == "<|user|>Question 0?<|end|><|assistant|>"
    assert pairs[0]["chosen"] == "Helpful answer 0.<|end|>"


def test_hh_rlhf_splits_at_the_last_assistant_turn(tokenizer):
    base = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    rows = [
        {"chosen": base + " Fine, thanks.", "rejected": base + " Go away."},
        {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"},
        {"chosen": "\n\nHuman: no reply", "rejected": "\n\nHuman: no reply either"},
    ]
    pairs, dropped, _ = convert(HHRLHF(), rows, tokenizer)
    assert pairs == [{"prompt": base, "chosen": " Fine, thanks.", "rejected": " Go away."}]
    assert dropped == {
        "chosen and rejected transcripts differ before the last Assistant turn": 1,
        "no Assistant turn in transcript": 1,
    }


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "parquet"])
def test_local_files_with_a_column_mapping(tmp_path, tokenizer, suffix):
    rows = [{"question": f"q{i}", "good": f"yes {i}", "bad": f"no {i}"} for i in range(10)]
    table = datasets.Dataset.from_list(rows)
    path = tmp_path / f"pairs.{suffix}"
    {
        "json": lambda p: p.write_text(json.dumps(rows)),
        "jsonl": lambda p: table.to_json(p),
        "csv": lambda p: table.to_csv(p, index=False),
        "parquet": lambda p: table.to_parquet(p),
    }[suffix](path)
    adapter = Preferences(
        dataset=str(path),
        prompt_column="question",
        chosen_column="good",
        rejected_column="bad",
        eval_fraction=0.2,
        limit=None,
    )
    data = prepare(adapter, tokenizer)
    assert (len(data.train), len(data.eval)) == (8, 2)
    assert {p["prompt"] for p in data.train} | {p["prompt"] for p in data.eval} == {
        f"q{i}\n" for i in range(10)
    }


def test_missing_column_names_file_column_and_columns_found(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "answer_b": "r"}])
    with pytest.raises(DataError) as err:
        prepare(Preferences(dataset=str(path)), tokenizer)
    message = str(err.value)
    assert "pairs.jsonl" in message and "['rejected']" in message and "answer_b" in message


def test_split_is_seeded(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD)
    first, again = (
        prepare(UltraFeedback(dataset=str(path), eval_fraction=0.5, seed=1), tokenizer) for _ in range(2)
    )
    other = prepare(UltraFeedback(dataset=str(path), eval_fraction=0.5, seed=2), tokenizer)
    assert first.eval["prompt"] == again.eval["prompt"] != other.eval["prompt"]


def test_limit_takes_the_first_rows_like_the_tutorial(tokenizer):
    data = prepare(UltraFeedback.tutorial(dataset="embedded"), tokenizer)
    assert (len(data.train), len(data.eval)) == (45, 5)
    first_50 = {r["prompt"] + "\n" for r in embedded.sample_rows()[:50]}  # the text format's separator
    assert set(data.train["prompt"]) | set(data.eval["prompt"]) == first_50


@pytest.mark.parametrize("n", [50, 200, 400])
def test_the_first_rows_cover_every_family_evenly(n):
    counts = Counter(r["group"] for r in embedded.sample_rows()[:n])
    assert len(counts) == 20 and max(counts.values()) - min(counts.values()) <= 1


def sentences(text):
    return {s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()}


@pytest.mark.parametrize("limit", [50, 200, None])
def test_embedded_eval_split_is_held_out_in_content(tokenizer, limit):
    """The default adapter holds out whole template families: eval text is never seen in training."""
    data = prepare(UltraFeedback(dataset="embedded", limit=limit), tokenizer)
    assert data.split_by == "group"
    group_of = {r["prompt"] + "\n": r["group"] for r in embedded.sample_rows()}  # + the separator
    train_groups, eval_groups = (
        {group_of[p] for p in data.train["prompt"]},
        {group_of[p] for p in data.eval["prompt"]},
    )
    assert len(eval_groups) >= 2 and not train_groups & eval_groups
    for key in ("prompt", "chosen", "rejected"):
        train_texts = set(data.train["prompt"]) | set(data.train["chosen"]) | set(data.train["rejected"])
        assert not set(data.eval[key]) & train_texts, f"an eval {key} occurs in train"
        train_sentences = set().union(*(sentences(t) for t in train_texts))
        shared = set().union(*(sentences(t) for t in data.eval[key])) & train_sentences
        assert not shared, f"eval {key} sentences occur in train: {sorted(shared)[:3]}"


def test_embedded_chosen_and_rejected_lengths_are_matched(tokenizer):
    """Neither side is systematically longer, so summed log-prob accuracy is not decided by length."""
    rows = embedded.sample_rows()
    chosen = [len(tokenizer(r["chosen"][-1]["content"]).input_ids) for r in rows]
    rejected = [len(tokenizer(r["rejected"][-1]["content"]).input_ids) for r in rows]
    share_longer = sum(c > r for c, r in zip(chosen, rejected)) / len(rows)
    assert 0.3 <= share_longer <= 0.7
    assert abs(sum(chosen) - sum(rejected)) / len(rows) < 2


REPEATED = [
    {"question": f"q{i % 4}", "qid": f"id{i % 4}", "good": f"yes {i}", "bad": f"no {i}"} for i in range(12)
]


def repeated(tmp_path, **changes):
    path = write_jsonl(tmp_path / "repeated.jsonl", REPEATED)
    return Preferences(
        dataset=str(path),
        prompt_column="question",
        chosen_column="good",
        rejected_column="bad",
        limit=None,
        **{"eval_fraction": 0.25, **changes},
    )


@pytest.mark.parametrize("split_by", ["auto", "prompt", "qid"])
def test_split_by_keeps_each_group_on_one_side(tmp_path, tokenizer, caplog, split_by):
    with caplog.at_level("INFO", logger="dpo_hub"):
        data = prepare(repeated(tmp_path, split_by=split_by), tokenizer)
    assert set(data.train["prompt"]).isdisjoint(data.eval["prompt"])
    assert (len(data.train), len(data.eval)) == (9, 3)  # target 3 pairs: one whole group of 3
    assert data.split_by == ("prompt" if split_by == "auto" else split_by)
    assert "eval split: 3 pairs in 1 groups" in caplog.text


def test_split_by_stops_at_the_group_that_reaches_the_target(tmp_path, tokenizer):
    data = prepare(repeated(tmp_path, eval_fraction=0.3), tokenizer)  # target round(3.6) = 4: two groups of 3
    assert len(data.eval) == 6 and len(set(data.eval["prompt"])) == 2


def test_split_by_is_seeded(tmp_path, tokenizer):
    first, again = (prepare(repeated(tmp_path, seed=3), tokenizer).eval["prompt"] for _ in range(2))
    others = {
        tuple(sorted(set(prepare(repeated(tmp_path, seed=s), tokenizer).eval["prompt"]))) for s in range(8)
    }
    assert sorted(first) == sorted(again) and len(others) > 1


def test_hh_rlhf_groups_by_the_converted_prompt(tmp_path, tokenizer):
    rows = [
        {
            "chosen": f"\n\nHuman: question {i % 3}?\n\nAssistant: kind reply {i}",
            "rejected": f"\n\nHuman: question {i % 3}?\n\nAssistant: rude reply {i}",
        }
        for i in range(9)
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    data = prepare(HHRLHF(dataset=str(path), limit=None, eval_fraction=0.3), tokenizer)
    assert data.split_by == "prompt" and len(data.eval) == 3 and len(set(data.eval["prompt"])) == 1
    assert set(data.train["prompt"]).isdisjoint(data.eval["prompt"])


def test_missing_split_column_names_it_and_the_columns_found(tmp_path, tokenizer):
    with pytest.raises(DataError) as err:
        prepare(repeated(tmp_path, split_by="question_id"), tokenizer)
    message = str(err.value)
    assert "repeated.jsonl" in message and "'question_id'" in message and "'qid'" in message


def test_too_few_groups_to_hold_out_says_what_to_do(tmp_path, tokenizer):
    rows = [{"prompt": "same?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(6)]
    path = write_jsonl(tmp_path / "one.jsonl", rows)
    with pytest.raises(DataError, match="too small to hold out whole groups") as err:
        prepare(Preferences(dataset=str(path), limit=None), tokenizer)
    assert "eval_fraction" in str(err.value) and "split_by null" in str(err.value)
    assert len(prepare(Preferences(dataset=str(path), limit=None, eval_fraction=0), tokenizer).train) == 6


def test_split_by_null_is_the_random_row_split(tmp_path, tokenizer):
    data = prepare(repeated(tmp_path, split_by=None, seed=5), tokenizer)
    table = datasets.Dataset.from_list(
        [{"prompt": r["question"], "chosen": r["good"], "rejected": r["bad"]} for r in REPEATED]
    )
    expected = table.train_test_split(test_size=3, seed=5)
    assert data.split_by is None and data.eval["chosen"] == expected["test"]["chosen"]
    assert data.train["chosen"] == expected["train"]["chosen"]


def test_unreadable_or_unknown_files(tmp_path, tokenizer):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        prepare(UltraFeedback(dataset=str(tmp_path / "nope.jsonl")), tokenizer)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="x.txt: unsupported file type"):
        prepare(Preferences(dataset=str(tmp_path / "x.txt")), tokenizer)
