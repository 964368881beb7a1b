"""Dataset adapters on hand-made rows of the real schemas, bad rows included."""

from __future__ import annotations

import json

import datasets
import pytest

from dpo_hub import HHRLHF, DataError, Preferences, UltraFeedback, embedded, prepare
from dpo_hub.data import convert
from dpo_hub.embedded import make_sample

ARGILLA_COLUMNS = {"source", "prompt", "chosen", "chosen-rating", "chosen-model", "rejected", "rejected-rating",
                   "rejected-model"}


def uf_row(prompt, chosen, rejected, **extra):
    def msgs(answer):
        return None if answer is None else [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]

    return {"source": "test", "prompt": prompt, "chosen": msgs(chosen), "chosen-rating": 5.0, "chosen-model": "a",
            "rejected": msgs(rejected), "rejected-rating": 1.0, "rejected-model": "b", **extra}


GOOD = [uf_row(f"Question {i}?", f"Helpful answer {i}.", f"Rude answer {i}.") for i in range(8)]
BAD = [uf_row("Q empty?", "", "no"), uf_row("Q same?", "same", "same"), uf_row("Q missing?", None, "x"),
       uf_row("", "a", "b")]


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
    assert len(rows) >= 300 and all(set(r) == ARGILLA_COLUMNS for r in rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert embedded.SAMPLE_PATH.read_text() == make_sample.render(make_sample.build_rows()), "regenerate sample.jsonl"


def test_ultrafeedback_text_drops_bad_rows_with_counts(tmp_path, tokenizer, caplog):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD + BAD)
    with caplog.at_level("WARNING", logger="dpo_hub"):
        data = prepare(UltraFeedback(dataset=str(path), limit=None, eval_fraction=0.25), tokenizer)
    assert len(data.train) + len(data.eval) == len(GOOD) and len(data.eval) == 2
    assert data.dropped == {"empty text": 2, "chosen identical to rejected": 1, "missing field": 1}
    assert data.examples["missing field"]["row"] == 10
    assert "dropped 2 row(s): empty text" in caplog.text
    pair = next(p for p in data.train if p["prompt"] == "Question 0?")
    assert pair == {"prompt": "Question 0?", "chosen": "Helpful answer 0.", "rejected": "Rude answer 0."}


def test_ultrafeedback_chat_without_template(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD)
    pairs, dropped, _ = convert(UltraFeedback(dataset=str(path), format="chat"), datasets.Dataset.from_list(GOOD),
                                tokenizer)
    assert not dropped
    assert pairs[0] == {"prompt": "User: Question 0?\n\nAssistant:", "chosen": " Helpful answer 0.",
                        "rejected": " Rude answer 0."}


def test_ultrafeedback_chat_applies_the_tokenizers_template(tokenizer):
    tokenizer = embedded.load_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    pairs, _, _ = convert(UltraFeedback(format="chat"), GOOD[:1], tokenizer)
    assert pairs[0]["prompt"] == "<|user|>Question 0?<|end|><|assistant|>"
    assert pairs[0]["chosen"] == "Helpful answer 0.<|end|>"


def test_hh_rlhf_splits_at_the_last_assistant_turn(tokenizer):
    base = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    rows = [{"chosen": base + " Fine, thanks.", "rejected": base + " Go away."},
            {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"},
            {"chosen": "\n\nHuman: no reply", "rejected": "\n\nHuman: no reply either"}]
    pairs, dropped, _ = convert(HHRLHF(), rows, tokenizer)
    assert pairs == [{"prompt": base, "chosen": " Fine, thanks.", "rejected": " Go away."}]
    assert dropped == {"chosen and rejected transcripts differ before the last Assistant turn": 1,
                       "no Assistant turn in transcript": 1}


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "parquet"])
def test_local_files_with_a_column_mapping(tmp_path, tokenizer, suffix):
    rows = [{"question": f"q{i}", "good": f"yes {i}", "bad": f"no {i}"} for i in range(10)]
    table = datasets.Dataset.from_list(rows)
    path = tmp_path / f"pairs.{suffix}"
    {"json": lambda p: p.write_text(json.dumps(rows)), "jsonl": lambda p: table.to_json(p),
     "csv": lambda p: table.to_csv(p, index=False), "parquet": lambda p: table.to_parquet(p)}[suffix](path)
    adapter = Preferences(dataset=str(path), prompt_column="question", chosen_column="good", rejected_column="bad",
                          eval_fraction=0.2, limit=None)
    data = prepare(adapter, tokenizer)
    assert (len(data.train), len(data.eval)) == (8, 2)
    assert {p["prompt"] for p in data.train} | {p["prompt"] for p in data.eval} == {f"q{i}" for i in range(10)}


def test_missing_column_names_file_column_and_columns_found(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "answer_b": "r"}])
    with pytest.raises(DataError) as err:
        prepare(Preferences(dataset=str(path)), tokenizer)
    message = str(err.value)
    assert "pairs.jsonl" in message and "['rejected']" in message and "answer_b" in message


def test_split_is_seeded(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "uf.jsonl", GOOD)
    first, again = (prepare(UltraFeedback(dataset=str(path), eval_fraction=0.5, seed=1), tokenizer) for _ in range(2))
    other = prepare(UltraFeedback(dataset=str(path), eval_fraction=0.5, seed=2), tokenizer)
    assert first.eval["prompt"] == again.eval["prompt"] != other.eval["prompt"]


def test_limit_takes_the_first_rows_like_the_tutorial(tokenizer):
    data = prepare(UltraFeedback.tutorial(dataset="embedded"), tokenizer)
    assert (len(data.train), len(data.eval)) == (45, 5)
    first_50 = {r["prompt"] for r in embedded.sample_rows()[:50]}
    assert set(data.train["prompt"]) | set(data.eval["prompt"]) == first_50


def test_unreadable_or_unknown_files(tmp_path, tokenizer):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        prepare(UltraFeedback(dataset=str(tmp_path / "nope.jsonl")), tokenizer)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="x.txt: unsupported file type"):
        prepare(Preferences(dataset=str(tmp_path / "x.txt")), tokenizer)
