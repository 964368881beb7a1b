"""Typed values from YAML or the command line:
``coerce("0,1", list[int] | None, "lora.layers_to_transform")``.

Follows the type hints of dpo_hub's dataclasses and of the installed trl/peft ones (unions, lists, mappings,
literals, enums); a value that does not fit is a ``RecipeError`` naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import types
import typing
from typing import Any

from dpo_hub.errors import DpoHubError, RecipeError


def coerce(value: Any, hint: Any, key: str) -> Any:
    """A YAML value or command-line text as type ``hint``; RecipeError naming ``key`` and the type
    otherwise."""
    kind, args = origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if kind in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        choices = sorted(options(hint), key=lambda a: origin(a) in (list, tuple, dict))  # scalars first
        if isinstance(value, str) and value.strip().startswith("{"):  # '{a: 1}' is a mapping, not text
            choices.sort(key=lambda a: origin(a) is not dict and not is_config(a))
        enums = [a for a in choices if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            return coerce(value, enums[0], key)
        for option in choices:
            try:
                return coerce(value, option, key)
            except RecipeError:
                continue
        if isinstance(value, bool) and str in args and bool not in args:
            raise _yaml_boolean(key, value)
        raise RecipeError(f"{key} must be {describe(hint)}, got {value!r}")
    if kind is typing.Literal:
        if any(
            value == c or (isinstance(c, str) and "[" in c and str(value).startswith(c.split("[")[0]))
            for c in args
        ):
            return value
        raise RecipeError(f"{key}={value!r} must be one of: {', '.join(map(str, args))}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [e.value for e in hint]
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
            hint_text = f"did you mean {' or '.join(close)}? " if close else ""
            raise RecipeError(
                f"{key}={value!r} is not allowed; {hint_text}use one of: {', '.join(map(str, choices))}"
            )
        return value
    if kind in (list, tuple):
        if isinstance(value, str):
            value = (
                _yaml(value, key) if value.strip().startswith("[") else [v.strip() for v in value.split(",")]
            )
        if not isinstance(value, (list, tuple)):
            raise RecipeError(
                f"{key} must be {describe(hint)} (a list, or comma-separated text), "
                f"got {type(value).__name__} {value!r}"
            )
        items = [coerce(v, args[0] if args else Any, key) for v in value]
        return tuple(items) if kind is tuple else items
    if kind is dict:
        value = _yaml(value, key) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise RecipeError(f"{key} must be a mapping (YAML, or text like '{{a: 1}}'), got {value!r}")
        return value
    if is_config(hint):
        return coerce(value, dict, key)
    return _scalar(value, hint, key)


def describe(hint: Any) -> str:
    """A type hint in words: ``int, list of int or null``."""
    if origin(hint) in (typing.Union, types.UnionType):
        words = [describe(a) for a in typing.get_args(hint) if a is not type(None)]
        words += ["null"] if type(None) in typing.get_args(hint) else []
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    if origin(hint) in (list, tuple):
        return f"list of {describe(typing.get_args(hint)[0])}" if typing.get_args(hint) else "list"
    if origin(hint) is dict:
        return "mapping"
    if origin(hint) is typing.Literal:
        return "one of " + "/".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def _scalar(value: Any, hint: Any, key: str) -> Any:
    wrong = RecipeError(f"{key} must be {describe(hint)}, got {type(value).__name__} {value!r}")
    if isinstance(value, (dict, list, tuple)) or (isinstance(value, bool) and hint in (int, float)):
        raise wrong
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise wrong
    if hint in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise wrong from None
        if hint is int and not number.is_integer():
            raise wrong
        return int(number) if hint is int else number
    if hint is str:
        if isinstance(value, bool):  # YAML's unquoted no/off/false, yes/on/true: not text any more
            raise _yaml_boolean(key, value)
        if not isinstance(value, (str, int, float)):
            raise wrong
        return str(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise RecipeError(f"{key} has type {describe(hint)}, which a recipe cannot set")


def _yaml_boolean(key: str, value: bool) -> RecipeError:
    spelled = "no, off or false" if value is False else "yes, on or true"
    return RecipeError(
        f"{key} is text, but YAML read {str(value).lower()} (an unquoted {spelled} is a boolean in YAML); "
        f'quote the value, e.g. {key.rsplit(".", 1)[-1]}: "{"no" if value is False else "yes"}"'
    )


def _yaml(text: str, key: str) -> Any:
    import yaml

    try:
        return load_yaml(text, key)
    except yaml.YAMLError as err:
        raise RecipeError(f"{key}: {text!r} is not valid YAML ({err})") from None


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last one silently):
    ``RecipeError`` naming ``source``, the line and the key."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (str, int, float, bool)) and key in seen and key != "<<":
                    raise RecipeError(
                        f"{source}: line {line}: key {key!r} is given twice (first on line {seen[key]}); "
                        "YAML would keep only the last value: delete one of them"
                    )
                seen.setdefault(key, line)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeys)  # noqa: S506 (a SafeLoader subclass)


def origin(hint: Any) -> Any:
    return typing.get_origin(hint) or (hint if hint in (list, tuple, dict) else None)


def options(hint: Any) -> list[Any]:
    if origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def is_config(hint: Any) -> bool:
    """A dataclass type (a library's nested config, e.g. peft's ``LoftQConfig``), set from a mapping."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def check(key: str, value: Any, ok: bool, rule: str, hint: str) -> None:
    """Raise ``RecipeError("KEY=VALUE must be RULE (HINT)")`` unless ``ok``; NaN and infinity never pass."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{key}={value} must be a finite number {rule} ({hint})")
    if not ok:
        raise RecipeError(f"{key}={value!r} must be {rule} ({hint})")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ``RecipeError`` naming ``key`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"{key}={value!r} is not allowed; {hint}use one of: {', '.join(allowed)}")


def check_repo_id(repo_id: str, key: str | None = None, error: type[DpoHubError] = RecipeError) -> None:
    """Raise ``error`` naming ``key`` (or just the id) unless ``repo_id`` is a valid Hub repo id; no network
    call.

    The recipe raises ``RecipeError`` for its ``push_to_hub`` key, the Hub commands ``HubError`` for their
    argument.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        what = f"{key}={repo_id!r}" if key else repr(repo_id)
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise error(
            f"{what} is not a valid Hub repo id ({why}); use NAMESPACE/NAME, e.g. your-user/gpt2-dpo "
            "(letters, digits, '-', '_' and '.' in namespace/name)"
        ) from err
