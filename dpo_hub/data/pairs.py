"""Row fields -> pair text: the prompt, the last reply, a transcript split, a chat-templated pair.

Each helper raises ``Drop`` with a reason naming the field when a row cannot become a training pair;
``data.convert`` counts those reasons instead of failing the run.
"""

from __future__ import annotations

from typing import Any

Pair = dict[str, str]


class Drop(Exception):
    """A row that cannot train; the message is the reason."""


def text_field(value: Any, name: str) -> str:
    """``value`` as non-empty text; a message list gives its last user turn (the prompt)."""
    if value is None:
        raise Drop(f"{name} is missing")
    if isinstance(value, list):
        return text_field(_turn(value, "user", name), name)
    if not isinstance(value, str):
        raise Drop(f"{name} is not text ({type(value).__name__})")
    if not value.strip():
        raise Drop(f"{name} is empty")
    return value


def last_reply(value: Any, name: str) -> str:
    return text_field(_turn(value, "assistant", name) if isinstance(value, list) else value, name)


def _turn(messages: list, role: str, name: str) -> Any:
    """The content of the last ``role`` message of ``messages``."""
    _check_messages(messages, name)
    for message in reversed(messages):
        if message["role"] == role:
            return message["content"]
    raise Drop(f"{name} has no {role} message")


def _check_messages(messages: list, name: str) -> None:
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise Drop(f"{name} is a list but not of {{role, content}} messages")


def _conversation(value: Any, name: str) -> list[dict]:
    """A chat-format conversation: optional system turn, then user/assistant alternating, ending with the
    assistant."""
    if not isinstance(value, list):
        raise Drop(f"{name} is not a message list ({type(value).__name__}); chat format needs one")
    _check_messages(value, name)
    roles = [m["role"] for m in value]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if any(role != ("user", "assistant")[i % 2] for i, role in enumerate(body)):
        raise Drop(f"{name}: roles do not alternate user/assistant")
    if not body or body[-1] != "assistant":
        raise Drop(f"{name}: the conversation does not end with an assistant turn")
    for message in value:
        text_field(message["content"], f"{name} {message['role']} message")
    return value


def split_transcript(text: Any, name: str) -> tuple[str, str]:
    marker = "\n\nAssistant:"
    text = text_field(text, name)
    cut = text.rfind(marker)
    if cut < 0:
        raise Drop("no Assistant turn in transcript")
    return text[: cut + len(marker)], text[cut + len(marker) :]


def transcript_messages(text: Any, name: str) -> list[dict]:
    """An HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) as a message list."""
    import re

    parts = re.split(r"\n\n(Human|Assistant):", text_field(text, name))
    if len(parts) < 3:
        raise Drop("no Human/Assistant turns in transcript")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


def chat_pair(chosen: Any, rejected: Any, tokenizer: Any) -> Pair:
    """Two conversations that differ only in their last (assistant) turn -> the templated prompt and answers.

    An answer ends where the template's end-of-turn token starts: trl appends the tokenizer's eos
    itself, so keeping the template's own would train (and score) the end of turn twice.
    """
    chosen, rejected = _conversation(chosen, "chosen"), _conversation(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise Drop("chosen and rejected conversations differ before the last turn")
    prompt = chat_prompt(chosen[:-1], tokenizer)
    if getattr(tokenizer, "chat_template", None):
        full = [tokenizer.apply_chat_template(c, tokenize=False) for c in (chosen, rejected)]
        answers = [
            _answer(f[len(prompt) :], c[-1]["content"], tokenizer.eos_token)
            if f.startswith(prompt)
            else c[-1]["content"]
            for f, c in zip(full, (chosen, rejected))
        ]
    else:  # no template (GPT-2): a plain "Role: text" transcript
        answers = [" " + chosen[-1]["content"], " " + rejected[-1]["content"]]
    return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}


def chat_prompt(messages: Any, tokenizer: Any) -> str:
    """The prompt text a chat model answers: ``messages`` (or one user turn of plain text) in its template."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"


def format_prompt(prompt: Any, tokenizer: Any, format: str, separator: str = "") -> str:
    """The prompt exactly as training saw it: chat -> the chat template; text -> the text + ``separator``."""
    if format == "chat":
        return chat_prompt(prompt, tokenizer)
    return prompt + separator


def chat_answer(answer: str, tokenizer: Any) -> str:
    """A plain answer as the template would close it, up to (not including) the eos that trl appends."""
    if not getattr(tokenizer, "chat_template", None):
        return " " + answer
    turns = [{"role": "user", "content": "?"}, {"role": "assistant", "content": answer}]
    prompt = tokenizer.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(turns, tokenize=False)
    return _answer(full[len(prompt) :], answer, tokenizer.eos_token) if full.startswith(prompt) else answer


def _answer(suffix: str, content: str, eos: str | None) -> str:
    """The templated answer ``suffix`` cut before the end-of-turn eos that follows ``content``."""
    end = suffix.find(eos, suffix.find(content) + len(content)) if eos and content in suffix else -1
    return suffix[:end] if end >= 0 else suffix
