"""An Ollama ``Modelfile`` beside the GGUF: the chat template as an Ollama (Go) template, and stop tokens.

Ollama does not run Jinja, so the tokenizer's chat template is turned into per-role text around each
message: each message's text is what rendering one more message adds (``ChatTurns.from_tokenizer``).
A template that inserts a default system prompt gives the Modelfile's ``SYSTEM``. A tokenizer without a
chat template gets the plain format dpo_hub trains with (``User: ...`` / ``Assistant:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_hub.errors import ExportError

ROLES = ("system", "user", "assistant")
MARK = "\x1fDPO_HUB_{}\x1f"  # a message content no template changes


@dataclass(frozen=True)
class ChatTurns:
    """Text before and after each role's message, the generation prompt and a default system prompt."""

    before: dict[str, str]
    after: dict[str, str]
    generation: str
    default_system: str | None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> ChatTurns:
        conversation = [{"role": role, "content": MARK.format(role.upper())} for role in ROLES]
        before, after, done = {}, {}, ""
        for n, message in enumerate(conversation, 1):
            text = render(tokenizer, conversation[:n], generation=False)
            if not text.startswith(done) or text.count(message["content"]) != 1:
                raise ExportError(
                    "the chat template does not render one message after another (it rewrites earlier "
                    "turns), so no Ollama template can be derived; write the Modelfile's TEMPLATE by hand"
                )
            added = text[len(done) :]
            before[message["role"]], after[message["role"]] = added.split(message["content"])
            done = text
        generation = render(tokenizer, conversation, generation=True)[len(done) :]
        user_only = render(tokenizer, conversation[1:2], generation=False)
        default_system = None
        own = before["user"] + conversation[1]["content"] + after["user"]
        if user_only != own and user_only.endswith(own):
            head = user_only[: -len(own)]
            if head.startswith(before["system"]) and head.endswith(after["system"]):
                default_system = head[len(before["system"]) : len(head) - len(after["system"])]
        return cls(before, after, generation, default_system)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt these turns give ``messages`` (what the Go template renders)."""
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.before[m["role"]] + m["content"] + self.after[m["role"]] for m in messages)
        return body + self.generation

    def go_template(self) -> str:
        """The Ollama template: each message of ``.Messages`` with its role's text, then the generation
        prompt."""
        branches = " ".join(
            f'{"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(self.before[role])}'
            f"{{{{ .Content }}}}{_go(self.after[role])}{{{{"
            for i, role in enumerate(ROLES)
        )
        return f"{{{{- range .Messages }}}}{{{{ {branches} end }}}}{{{{ end }}}}{_go(self.generation)}"

    def stops(self, eos_token: str | None) -> list[str]:
        """Stop strings: the end of an assistant turn, the start of a user turn, the eos token."""
        found = [eos_token or "", self.after["assistant"].strip(), self.before["user"].strip()]
        return list(dict.fromkeys(s for s in found if s))


def render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    """``messages`` as the model reads them: the chat template, or dpo_hub's plain format without one
    (``dpo_hub.data.pairs.chat_prompt``)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return text + ("Assistant:" if generation else "")


def modelfile(gguf_name: str, tokenizer: Any, generation: Any = None) -> str:
    """The Modelfile text for ``./gguf_name``; ``generation``: the run's ``Generation`` preset (sampling
    settings) or None."""
    turns = ChatTurns.from_tokenizer(tokenizer)
    lines = [
        "# Ollama Modelfile written by dpo_hub: ollama create NAME -f Modelfile && ollama run NAME",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{turns.go_template()}"""',
    ]
    if turns.default_system is not None:
        lines.append(f'SYSTEM """{turns.default_system}"""')
    lines += [
        f"PARAMETER stop {_quoted(stop)}" for stop in turns.stops(getattr(tokenizer, "eos_token", None))
    ]
    if generation is not None:
        lines.append(f"PARAMETER num_predict {generation.max_new_tokens}")
        if generation.do_sample:
            lines += [
                f"PARAMETER temperature {generation.temperature}",
                f"PARAMETER top_k {generation.top_k}",
                f"PARAMETER top_p {generation.top_p}",
            ]
        else:
            lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def _go(text: str) -> str:
    """Literal text inside a Go template (``{{`` would start an action)."""
    return text.replace("{{", '{{ "{{" }}')


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
