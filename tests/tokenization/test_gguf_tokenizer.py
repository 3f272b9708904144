"""Tokenizers built from GGUF metadata, against the reference library's conversion of the same files.

The files are written here from the tiny vocabularies the tokenizer tests train (a byte-level
BPE and a SentencePiece BPE), the way llama.cpp's converter stores them; the real SmolLM2
file is covered in tests/models/test_smollm2_gguf.py.
"""

from __future__ import annotations

import json

import pytest
from gguf import GGUFValueType as V
from gguf_writers import write_gguf
from tokenizer_cases import VARIED_TEXTS, random_texts

import torchformers
from torchformers.errors import ConfigError, TokenizerFileError
from torchformers.tokenization.gguf import SPLIT_PATTERNS, merges_from_scores

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" \
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
MODEL_KEYS = {"llama.context_length": 64, "llama.embedding_length": 32, "llama.block_count": 1,
              "llama.feed_forward_length": 64, "llama.attention.head_count": 2,
              "llama.attention.layer_norm_rms_epsilon": 1e-5}


def byte_level_gguf(directory, bpe_dir, name="bpe.gguf", pre=None, **metadata):
    vocab = json.loads((bpe_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = [line for line in (bpe_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    tokens = sorted(vocab, key=vocab.get)
    kinds = [CONTROL if token == "<|endoftext|>" else NORMAL for token in tokens]
    # Added by the model's authors: two control tokens, a user-defined one, one outside the byte
    # alphabet (a converter mislabel the reference drops) and a plain word spelled in UTF-8.
    extra = [("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL), ("<tool>", USER_DEFINED),
             ("<｜end｜>", CONTROL), ("café", NORMAL)]
    tokens += [token for token, _ in extra]
    kinds += [kind for _, kind in extra]
    values = {**MODEL_KEYS, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
              "tokenizer.ggml.token_type": (kinds, V.ARRAY, V.INT32), "tokenizer.ggml.merges": merges,
              "tokenizer.ggml.bos_token_id": len(tokens) - 5, "tokenizer.ggml.eos_token_id": len(tokens) - 4,
              "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 0,
              "tokenizer.chat_template": TEMPLATE, **metadata}
    if pre is not None:
        values["tokenizer.ggml.pre"] = pre
    return write_gguf(directory / name, "llama", values)


def sentencepiece_gguf(directory, llama_dir, name="sp.gguf", **metadata):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(llama_dir / "tokenizer.model"))
    tokens, scores, kinds = [], [], []
    for index in range(processor.get_piece_size()):
        tokens.append(processor.id_to_piece(index))
        scores.append(processor.get_score(index))
        kinds.append(UNKNOWN if processor.is_unknown(index) else CONTROL if processor.is_control(index)
                     else BYTE if processor.is_byte(index) else NORMAL)
    for token, kind in (("<think>", USER_DEFINED), ("<|tool|>", CONTROL)):
        tokens.append(token)
        scores.append(0.0)
        kinds.append(kind)
    values = {**MODEL_KEYS, "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
              "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
              "tokenizer.ggml.token_type": (kinds, V.ARRAY, V.INT32), "tokenizer.ggml.bos_token_id": 1,
              "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
              "tokenizer.chat_template": TEMPLATE, **metadata}
    return write_gguf(directory / name, "llama", values)


def assert_same_tokenizer(ours, theirs, compare) -> None:
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(theirs.backend_tokenizer.to_str())
    for attribute in ("bos_token", "eos_token", "unk_token", "pad_token", "bos_token_id", "eos_token_id",
                      "pad_token_id", "add_bos_token", "add_eos_token", "padding_side", "chat_template"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert len(ours) == len(theirs) and ours.get_vocab() == theirs.get_vocab()
    texts = VARIED_TEXTS + random_texts(20) + ["<|im_start|>user\nhi<tool><think><|tool|><|im_end|>", "café <｜end｜>"]
    for text in texts:
        assert compare(ours, theirs, text) is None
    if ours.pad_token is not None:
        assert compare(ours, theirs, VARIED_TEXTS[:4], padding=True) is None
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"}]
    for tokenize in (False, True):
        assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize) == \
            theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize)


@pytest.mark.parametrize("pre", [None, "llama-bpe", "qwen2", "tekken", "gpt-4o", "qwen35"])
def test_byte_level_bpe_matches_the_reference(tmp_path, bpe_dir, reference, compare, pre):
    byte_level_gguf(tmp_path, bpe_dir, pre=pre)
    ours = torchformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bpe.gguf")
    theirs = reference.from_pretrained(tmp_path, gguf_file="bpe.gguf")
    assert_same_tokenizer(ours, theirs, compare)
    assert "<｜end｜>" not in ours.get_added_vocab()


def test_byte_level_bos_eos_flags_follow_the_metadata(tmp_path, bpe_dir, reference, compare):
    byte_level_gguf(tmp_path, bpe_dir, **{"tokenizer.ggml.add_bos_token": True,
                                          "tokenizer.ggml.add_eos_token": True})
    ours = torchformers.AutoTokenizer.from_pretrained(tmp_path / "bpe.gguf")
    theirs = reference.from_pretrained(tmp_path, gguf_file="bpe.gguf")
    assert ours("hi").input_ids[0] == ours.bos_token_id and ours("hi").input_ids[-1] == ours.eos_token_id
    assert_same_tokenizer(ours, theirs, compare)


@pytest.mark.parametrize("add_bos", [None, False])
def test_sentencepiece_bpe_matches_the_reference(tmp_path, llama_dir, reference, compare, add_bos):
    metadata = {} if add_bos is None else {"tokenizer.ggml.add_bos_token": add_bos}
    sentencepiece_gguf(tmp_path, llama_dir, **metadata)
    ours = torchformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    theirs = reference.from_pretrained(tmp_path, gguf_file="sp.gguf")
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says not to.
    assert ours.add_bos_token is (add_bos is None)
    assert_same_tokenizer(ours, theirs, compare)


def test_merges_from_scores_order():
    tokens = ["a", "b", "c", "ab", "bc", "abc", "ca"]
    scores = [0.0, 0.0, 0.0, -1.0, -1.0, -0.5, -3.0]
    # Highest score first; among equals, the longer left piece, then the longer right piece.
    assert merges_from_scores(tokens, scores) == [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c"), ("c", "a")]
    # Without scores, the merge making the earlier token first.
    assert merges_from_scores(tokens, None) == [("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c"), ("c", "a")]


def test_split_patterns_are_the_reference_ones():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    assert SPLIT_PATTERNS == GGUF_PRE_TOKENIZER_SPLITS


def test_an_unsupported_tokenizer_kind_is_named(tmp_path):
    path = write_gguf(tmp_path / "t.gguf", "llama", {**MODEL_KEYS, "tokenizer.ggml.model": "bert",
                                                      "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(TokenizerFileError, match=r"'bert' tokenizer.*\['gpt2', 'llama'\]") as error:
        torchformers.AutoTokenizer.from_pretrained(path)
    assert str(path) in str(error.value)


def test_a_file_without_a_tokenizer_names_the_key(tmp_path):
    write_gguf(tmp_path / "t.gguf", "llama", MODEL_KEYS)
    with pytest.raises(ConfigError, match="'tokenizer.ggml.model'"):
        torchformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")


def test_a_special_token_id_outside_the_vocabulary_is_reported(tmp_path, bpe_dir):
    byte_level_gguf(tmp_path, bpe_dir, **{"tokenizer.ggml.eos_token_id": 10_000})
    with pytest.raises(TokenizerFileError, match="tokenizer.ggml.eos_token_id is 10000"):
        torchformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bpe.gguf")


def test_keyword_arguments_override_the_file(tmp_path, bpe_dir):
    byte_level_gguf(tmp_path, bpe_dir)
    tokenizer = torchformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bpe.gguf", padding_side="left")
    assert tokenizer.padding_side == "left"
