"""Chat templates rendered in the sandbox, against the reference library, on SmolLM2's real template."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import torch

from torchformers import GPT2TokenizerFast
from torchformers.errors import ChatTemplateError, TokenizerError

# SmolLM2-135M-Instruct's template, read once from its GGUF file (see "source" in the fixture).
SMOLLM2 = json.loads((Path(__file__).parents[1] / "fixtures" / "smollm2_chat_template.json").read_text())["template"]

TOOL_TEMPLATE = (
    "{%- if tools %}{{ 'Tools: ' + (tools | tojson) + '\\n' }}{% endif %}"
    "{%- if documents %}{% for d in documents %}{{ '[' + d.title + '] ' + d.text + '\\n' }}{% endfor %}{% endif %}"
    "{%- for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}{% endif %}"
    "{{ m.role + ': ' + (m.content | tojson(indent=1)) + '\\n' }}{% if loop.index > 5 %}{% break %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant:' }}{% endif %}"
)

CHATS = [
    [{"role": "user", "content": "Hello! 東京 😀 <b>bold</b> & \"quotes\""}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "Continue this"}, {"role": "assistant", "content": "Once upon a time"}],
]


@pytest.fixture(scope="module")
def pair(bpe_dir, reference, tmp_path_factory):
    """Our and the reference's tokenizer for the tiny BPE, with ChatML's special tokens and SmolLM2's template."""
    directory = tmp_path_factory.mktemp("chat")
    for name in ("vocab.json", "merges.txt"):
        (directory / name).write_bytes((bpe_dir / name).read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "chat_template": SMOLLM2,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "pad_token": "<|endoftext|>",
    }))
    return GPT2TokenizerFast.from_pretrained(directory), reference.from_pretrained(directory)


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("options", [{}, {"add_generation_prompt": True}])
def test_smollm2_template_matches_reference(pair, chat, options):
    ours, theirs = pair
    text = ours.apply_chat_template(chat, tokenize=False, **options)
    assert text == theirs.apply_chat_template(chat, tokenize=False, **options)
    assert text.startswith("<|im_start|>")
    ids = ours.apply_chat_template(chat, **options)
    assert ids["input_ids"] == theirs.apply_chat_template(chat, **options)["input_ids"]
    assert ids["input_ids"][0] == ours.convert_tokens_to_ids("<|im_start|>")
    assert ours.apply_chat_template(chat, return_dict=False, **options) == ids["input_ids"]


def test_continue_final_message_batches_and_tensors(pair):
    ours, theirs = pair
    continued = ours.apply_chat_template(CHATS[2], tokenize=False, continue_final_message=True)
    assert continued == theirs.apply_chat_template(CHATS[2], tokenize=False, continue_final_message=True)
    assert continued.endswith("Once upon a time")
    batch = ours.apply_chat_template(CHATS, add_generation_prompt=True, padding=True, return_tensors="pt")
    reference = theirs.apply_chat_template(CHATS, add_generation_prompt=True, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(batch["attention_mask"], reference["attention_mask"])
    with pytest.raises(TokenizerError, match="cannot both"):
        ours.apply_chat_template(CHATS[2], continue_final_message=True, add_generation_prompt=True)


def test_tools_documents_tojson_and_loop_controls(pair):
    ours, theirs = pair
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Météo à <Paris>",
                                               "parameters": {"type": "object", "properties": {}}}}]
    documents = [{"title": "Doc", "text": "Some text"}]
    chat = [{"role": "user", "content": "naïve <tag> & ü"}] * 8
    options = dict(tools=tools, documents=documents, chat_template=TOOL_TEMPLATE, add_generation_prompt=True,
                   tokenize=False)
    text = ours.apply_chat_template(chat, **options)
    assert text == theirs.apply_chat_template(chat, **options)
    assert "Météo à <Paris>" in text and text.count("user:") == 6


def test_strftime_now_and_extra_variables(pair):
    ours, theirs = pair
    template = "{{ strftime_now('%Y') }} {{ custom }} {{ eos_token }}"
    chat = CHATS[0]
    assert ours.apply_chat_template(chat, chat_template=template, tokenize=False, custom="x") == \
        theirs.apply_chat_template(chat, chat_template=template, tokenize=False, custom="x")


def test_failing_template_names_it(pair):
    ours, _ = pair
    with pytest.raises(ChatTemplateError, match="no bad roles") as raised:
        ours.apply_chat_template([{"role": "bad", "content": "x"}], chat_template=TOOL_TEMPLATE)
    assert "chat template (passed as chat_template" in str(raised.value)
    assert isinstance(raised.value, jinja2.TemplateError) and isinstance(raised.value, ValueError)
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ours.apply_chat_template(CHATS[0], chat_template="{% for %}")
    with pytest.raises(ChatTemplateError, match="default, of"):
        ours.apply_chat_template([{"role": "user"}])  # SmolLM2's template needs message['content']


def test_sandbox_blocks_unsafe_access(pair):
    ours, _ = pair
    with pytest.raises(ChatTemplateError):
        ours.apply_chat_template(CHATS[0], chat_template="{{ messages.__class__.__mro__[1].__subclasses__() }}",
                                 tokenize=False)
    with pytest.raises(ChatTemplateError):
        ours.apply_chat_template(CHATS[0], chat_template="{{ messages.append(1) }}", tokenize=False)


def test_missing_template_and_bad_conversations(bpe_dir):
    from torchformers import GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_pretrained(bpe_dir)
    with pytest.raises(TokenizerError, match="no chat template"):
        tokenizer.apply_chat_template(CHATS[0])
    tokenizer.chat_template = SMOLLM2
    with pytest.raises(TokenizerError, match="empty"):
        tokenizer.apply_chat_template([])
    with pytest.raises(TokenizerError, match="message dicts"):
        tokenizer.apply_chat_template(["not a message"])
    assert tokenizer.apply_chat_template(CHATS[0], tokenize=False).endswith("<|im_end|>\n")


def test_template_survives_save_and_load(pair, tmp_path, reference):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == SMOLLM2
    assert reference.from_pretrained(tmp_path).chat_template == SMOLLM2
    assert GPT2TokenizerFast.from_pretrained(tmp_path).chat_template == SMOLLM2
