"""Chat templates: render conversations with a tokenizer's Jinja template, in a sandbox.

Templates come from model repositories, so they are untrusted: they run in Jinja2's
``ImmutableSandboxedEnvironment`` and see only plain JSON-like data. The helpers templates use
are the reference library's: ``raise_exception``, ``strftime_now``, a ``tojson`` that keeps
non-ASCII text and does not escape HTML, and the ``loopcontrols`` extension. A template that
fails raises ChatTemplateError naming the template and the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import ChatTemplateError, TokenizerError, UnsupportedArgumentError

_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _error_class() -> type[Exception]:
    """ChatTemplateError that is also a jinja2 TemplateError, so code catching either works."""
    import jinja2

    global _TemplateError
    if _TemplateError is None:
        _TemplateError = type("ChatTemplateError", (ChatTemplateError, jinja2.TemplateError), {
            "__module__": __name__,
            "__init__": lambda self, message: ChatTemplateError.__init__(self, message),
            "message": property(lambda self: self.args[0] if self.args else None),
            "__str__": lambda self: str(self.args[0]) if self.args else "",
        })
    return _TemplateError


_TemplateError: type[Exception] | None = None


@lru_cache(maxsize=32)
def compile_template(template: str) -> Any:
    """Compile a template (cached) in the sandboxed environment with the reference's helpers."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body (assistant masks are not tracked)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationBlock, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    return environment.from_string(template)


def plain_data(value: Any) -> Any:
    """A copy of ``value`` built only from JSON-like types; other objects become ``"<TypeName>"``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return plain_data(value.item())
    if callable(getattr(value, "model_dump", None)):
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def select_template(tokenizer: Any, chat_template: str | None, tools: list | None) -> tuple[str, str]:
    """(name, text) of the template to use: one passed in, one of the tokenizer's by name, or its default."""
    templates = tokenizer.chat_template
    if isinstance(templates, dict):
        if chat_template is not None and chat_template in templates:
            return chat_template, templates[chat_template]
        if chat_template is None:
            if tools is not None and "tool_use" in templates:
                return "tool_use", templates["tool_use"]
            if "default" in templates:
                return "default", templates["default"]
            raise TokenizerError(
                f"{tokenizer.name_or_path!r} has several chat templates and none is the default; pass "
                f"chat_template= one of {sorted(templates)}."
            )
    if chat_template is not None:
        return "passed as chat_template", chat_template
    if templates is None:
        raise TokenizerError(
            f"The tokenizer of {tokenizer.name_or_path!r} has no chat template; set tokenizer.chat_template or pass "
            "chat_template=... to apply_chat_template."
        )
    return "default", templates


def render_conversations(
    template: str,
    conversations: list[list[dict[str, Any]]],
    *,
    template_name: str,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    add_generation_prompt: bool = False,
    continue_final_message: bool | str = False,
    **kwargs: Any,
) -> list[str]:
    """Render each conversation; ``kwargs`` are extra template variables."""
    import jinja2

    label = f"chat template ({template_name})"
    error_class = _error_class()
    try:
        compiled = compile_template(template)
    except jinja2.TemplateError as error:
        raise error_class(f"The {label} does not compile: {error}") from None
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, dict):
                raise TokenizerError(
                    f"tools must be JSON schema dicts ({{'type': 'function', 'function': {{...}}}}), got "
                    f"{type(tool).__name__}; torchformers does not turn Python functions into schemas."
                )
    if documents is not None and not all(isinstance(d, dict) for d in documents):
        raise TokenizerError("documents must be a list of dicts (usually with 'title' and 'text').")
    tools, documents, kwargs = plain_data(tools), plain_data(documents), plain_data(kwargs)
    rendered = []
    for chat in conversations:
        chat = plain_data(getattr(chat, "messages", chat))
        if not isinstance(chat, list) or not all(isinstance(m, dict) for m in chat):
            raise TokenizerError("A conversation must be a list of message dicts ({'role': ..., 'content': ...}).")
        chat = [_with_reasoning_aliases(m) for m in chat]
        final = None
        if continue_final_message:
            if not chat:
                raise TokenizerError("continue_final_message is set but the conversation is empty.")
            field = continue_final_message if isinstance(continue_final_message, str) else "content"
            final = chat[-1].get(field)
            if final is None:
                raise TokenizerError(f"continue_final_message is set but the final message has no {field!r}.")
            fields = [f for f in _REASONING_FIELDS if chat[-1].get(f) == final] if field in _REASONING_FIELDS \
                else [field]
            if not any(f in template for f in fields):
                raise TokenizerError(f"continue_final_message={field!r} but the {label} never reads that field.")
            if isinstance(final, (list, tuple)):
                for block in reversed(final):
                    if isinstance(block, dict) and "text" in block:
                        final = block["text"]
                        block["text"] = block["text"] + _CONTINUE_TAG
                        break
                else:
                    raise TokenizerError("continue_final_message is set but the final message has no text block.")
            else:
                for f in fields:
                    chat[-1][f] = chat[-1][f] + _CONTINUE_TAG
        try:
            text = compiled.render(messages=chat, tools=tools, documents=documents,
                                   add_generation_prompt=add_generation_prompt, **kwargs)
        except jinja2.TemplateError as error:
            raise error_class(f"The {label} raised an error while rendering: {error}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
            raise error_class(f"The {label} failed while rendering: {type(error).__name__}: {error}") from None
        if final is not None:
            if final.strip() not in text or _CONTINUE_TAG.strip() not in text:
                raise TokenizerError(
                    f"continue_final_message is set but the {label} drops part of the final message, so it cannot "
                    "be continued."
                )
            at = text.rindex(_CONTINUE_TAG.strip())
            text = text[:at] if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()
        rendered.append(text)
    return rendered


def _with_reasoning_aliases(message: dict[str, Any]) -> dict[str, Any]:
    reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def apply_chat_template(
    tokenizer: Any,
    conversation: Any,
    *,
    tools: list[dict] | None,
    documents: list[dict] | None,
    chat_template: str | None,
    add_generation_prompt: bool,
    continue_final_message: bool | str,
    tokenize: bool,
    padding: bool | str,
    truncation: bool,
    max_length: int | None,
    return_tensors: str | None,
    return_dict: bool,
    return_assistant_tokens_mask: bool,
    tokenizer_kwargs: dict[str, Any] | None,
    **kwargs: Any,
) -> Any:
    """The work of ``PreTrainedTokenizerBase.apply_chat_template``."""
    if return_assistant_tokens_mask:
        raise UnsupportedArgumentError("return_assistant_tokens_mask is not supported by torchformers.")
    if continue_final_message and add_generation_prompt:
        raise TokenizerError(
            "continue_final_message and add_generation_prompt cannot both be set: continue the final message, or "
            "start a new assistant message."
        )
    name, template = select_template(tokenizer, chat_template, tools)
    if isinstance(conversation, (list, tuple)) and not conversation:
        raise TokenizerError("Cannot apply a chat template to an empty conversation.")
    batched = isinstance(conversation, (list, tuple)) and (
        isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
    conversations = list(conversation) if batched else [conversation]
    cleaned = []
    for chat in conversations:
        chat = getattr(chat, "messages", chat)
        if not isinstance(chat, (list, tuple)) or not all(isinstance(m, Mapping) for m in chat):
            raise TokenizerError("A conversation must be a list of message dicts ({'role': ..., 'content': ...}).")
        cleaned.append([{k: v for k, v in m.items() if v is not None} for m in chat])
    owner = tokenizer.name_or_path or type(tokenizer).__name__
    variables = {**tokenizer.special_tokens_map, **kwargs}
    rendered = render_conversations(
        template, cleaned, template_name=f"{name}, of {owner}", tools=tools, documents=documents,
        add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message, **variables,
    )
    if not tokenize:
        return rendered if batched else rendered[0]
    encoded = tokenizer(rendered if batched else rendered[0], padding=padding, truncation=truncation,
                        max_length=max_length, add_special_tokens=False, return_tensors=return_tensors,
                        **(tokenizer_kwargs or {}))
    return encoded if return_dict else encoded["input_ids"]
