"""Tokenizers: the reference library's tokenizer API over fast (`tokenizers`) and slow (pure-Python)
implementations, chat templates, and AutoTokenizer."""

from .auto import AutoTokenizer
from .base import BatchEncoding, PreTrainedTokenizerBase
from .fast import (
    BertTokenizerFast,
    GPT2TokenizerFast,
    LlamaTokenizerFast,
    PreTrainedTokenizerFast,
    T5TokenizerFast,
)
from .slow import BertTokenizer, GPT2Tokenizer, LlamaTokenizer, PreTrainedTokenizer, T5Tokenizer

__all__ = [
    "AutoTokenizer", "BatchEncoding", "BertTokenizer", "BertTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast",
    "LlamaTokenizer", "LlamaTokenizerFast", "PreTrainedTokenizer", "PreTrainedTokenizerBase",
    "PreTrainedTokenizerFast", "T5Tokenizer", "T5TokenizerFast",
]
