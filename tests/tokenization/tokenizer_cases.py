"""Texts and helpers shared by the tokenizer tests."""

from __future__ import annotations

import random

VARIED_TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld, naïve café, résumé, Ångström, İstanbul, ΣΑΣ, Straße, ﬁne",
    "東京は日本の首都です。北京欢迎你！서울특별시",
    "emoji 😀🚀 👩‍👩‍👧 flags 🇫🇷 and ✓ ☃",
    "def f(x):\n    return x**2  # square\n\tprint(f'{x!r}')",
    "if (a <= b && c != d) { return [1, 2, 3]; }",
    "",
    " ",
    "   \t\n  ",
    "a  b\t\tc\n\nd     e",
    "  leading and trailing spaces   ",
    "Don't stop-believing... it's 3.14159! They're we'll I'd 'quoted' \"double\"",
    "zero\u200bwidth\u200djoiner\u00a0nbsp\x00null\ufffdreplacement\x07bell",
    "unaffable supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 120,
    "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ １２３",
    "numbers 1234567890 3.14 1,000,000 -42 +7e10",
    "URL https://example.com/path?q=1&r=2#frag and email a.b@c.org",
    "Mixed Русский текст и العربية و עברית",
]


def random_texts(count: int, seed: int = 0, length: int = 40) -> list[str]:
    rng = random.Random(seed)
    pool = list("abcdefghij KLMNOP  \t\n東京😀éïü{}()!?.,'\"-_0123456789ＡＢ\u00a0")
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, length))) for _ in range(count)]


def corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over lazy dog hello world tokenization café naïve résumé 東京 日本語 😀 🚀 "
             "def return print(x) == != <= >= { } [ ] ( ) ; : , . ! ? 'quoted' \"double\" it's 3.14 42").split(" ")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(lines)]


def encoding_view(encoding) -> dict:
    """Everything an encoding holds, as plain values (for comparing two tokenizers' outputs)."""
    rows = encoding["input_ids"]
    batched = bool(rows) and isinstance(rows[0], list)
    count = len(rows) if batched else 1
    return {
        **{key: value for key, value in encoding.items()},
        "_word_ids": [encoding.word_ids(i) for i in range(count)],
        "_sequence_ids": [encoding.sequence_ids(i) for i in range(count)],
        "_tokens": [encoding.tokens(i) for i in range(count)],
    }
