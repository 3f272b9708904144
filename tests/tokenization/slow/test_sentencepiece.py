"""SentencePiece tokenizers (Llama-style BPE, T5-style unigram): slow, fast and the reference library agree."""

from __future__ import annotations

import pytest
from tokenizer_cases import VARIED_TEXTS, random_texts

from torchformers import LlamaTokenizer, LlamaTokenizerFast, T5Tokenizer, T5TokenizerFast
from torchformers.errors import TokenizerFileError

TEXTS = VARIED_TEXTS + random_texts(150, seed=4) + ["<s>hi</s> there", " x", "▁literal▁marks"]


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_slow_fast_and_reference_agree(family, llama_dir, t5_dir, reference, compare):
    directory = llama_dir if family == "llama" else t5_dir
    slow_class, fast_class = (LlamaTokenizer, LlamaTokenizerFast) if family == "llama" else (T5Tokenizer, T5TokenizerFast)
    slow, fast, theirs = slow_class.from_pretrained(directory), fast_class.from_pretrained(directory), \
        reference.from_pretrained(directory)
    assert len(slow) == len(fast) == len(theirs)
    assert slow.get_vocab() == fast.get_vocab() == theirs.get_vocab()
    assert slow.all_special_tokens == fast.all_special_tokens == theirs.all_special_tokens
    theirs.pad_token = theirs.unk_token
    for ours in (slow, fast, slow.to_fast()):
        ours.pad_token = ours.unk_token
        assert [p for t in TEXTS for p in [compare(ours, theirs, t)] if p] == []
        assert compare(ours, theirs, TEXTS[:6], TEXTS[6:12], truncation="longest_first", max_length=40, stride=2,
                       return_overflowing_tokens=True, padding=True) is None
        assert compare(ours, theirs, TEXTS[:5], add_special_tokens=False, padding=True) is None


def test_llama_options(llama_dir, reference, compare):
    for options in ({"add_bos_token": False}, {"add_eos_token": True}, {"legacy": True}, {"add_prefix_space": False}):
        theirs = reference.from_pretrained(llama_dir, **options)
        for ours in (LlamaTokenizer.from_pretrained(llama_dir, **options),
                     LlamaTokenizerFast.from_pretrained(llama_dir, **options)):
            assert [p for t in VARIED_TEXTS for p in [compare(ours, theirs, t)] if p] == [], options
    assert LlamaTokenizer.from_pretrained(llama_dir).padding_side == "left"


def test_t5_sentinels(t5_dir, reference):
    ours, theirs = T5Tokenizer.from_pretrained(t5_dir), reference.from_pretrained(t5_dir)
    assert ours.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == \
        theirs.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"])
    text = "fill <extra_id_0> the <extra_id_1> blanks"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]


def test_corrupt_model_file(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(TokenizerFileError, match="SentencePiece"):
        LlamaTokenizer(vocab_file=str(tmp_path / "tokenizer.model"))
    with pytest.raises(TokenizerFileError, match="does not exist"):
        T5Tokenizer(vocab_file=str(tmp_path / "spiece.model"))
