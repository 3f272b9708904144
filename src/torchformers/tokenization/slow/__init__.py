"""Pure-Python ("slow") tokenizers: WordPiece, byte-level BPE and SentencePiece families."""

from .base import Encoding, PreTrainedTokenizer
from .bpe import GPT2Tokenizer
from .sentencepiece import LlamaTokenizer, T5Tokenizer
from .wordpiece import BertTokenizer

__all__ = ["BertTokenizer", "Encoding", "GPT2Tokenizer", "LlamaTokenizer", "PreTrainedTokenizer", "T5Tokenizer"]
