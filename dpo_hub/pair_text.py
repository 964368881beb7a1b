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
    """A chat-format conversation: optional system turn, then user/assistant alternating, ending with the assistant."""
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
    return text[: cut + len(marker)], text[cut + len(marker):]


def chat_pair(chosen: Any, rejected: Any, tokenizer: Any) -> Pair:
    chosen, rejected = _conversation(chosen, "chosen"), _conversation(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise Drop("chosen and rejected conversations differ before the last turn")
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(chosen[:-1], tokenize=False, add_generation_prompt=True)
        full = [tokenizer.apply_chat_template(c, tokenize=False) for c in (chosen, rejected)]
        answers = [f[len(prompt):] if f.startswith(prompt) else c[-1]["content"] for f, c in zip(full, (chosen, rejected))]
    else:  # no template (GPT-2): a plain "Role: text" transcript
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in chosen[:-1]) + "Assistant:"
        answers = [" " + chosen[-1]["content"], " " + rejected[-1]["content"]]
    return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}
