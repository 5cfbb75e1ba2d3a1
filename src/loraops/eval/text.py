"""How the scores cut text into tokens, chosen by the script of the text, so every language scores alike.

rouge-score's own tokenizer keeps only [a-z0-9] (a Chinese answer scores 0 whatever it says), a
whitespace split makes a Chinese sentence one token, and BLEU's default `13a` tokenizer is meant for
space-separated languages. Here Han and kana characters are tokens of their own, every other run of
Unicode letters and digits is a word, and BLEU uses sacrebleu's tokenizer for the script.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

WORDS_VERSION = "unicode-words-1"  # recorded in fingerprints: a change here changes every score
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_CJK = _HAN + _KANA
_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+")
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+|[^\w\s]")
_HAS_HAN, _HAS_KANA = re.compile(f"[{_HAN}]"), re.compile(f"[{_KANA}]")
_HAS_NON_ASCII_LETTER = re.compile(r"[^\W\d_a-zA-Z]")


def words(text: str) -> list[str]:
    """Lower-cased words (each Han or kana character alone); punctuation and symbols dropped."""
    return _WORD.findall(text.lower())


def tokens(text: str) -> list[str]:
    """Words as in `words` but case kept, plus every punctuation mark, symbol and emoji as a token."""
    return _TOKEN.findall(text)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem import porter  # rouge-score's own stemmer

    return porter.PorterStemmer()


class RougeTokenizer:
    """For rouge-score: its word splitting replaced, its Porter stemming of English words kept."""

    def tokenize(self, text: str) -> list[str]:
        stem = _stemmer().stem
        return [stem(w) if w.isascii() and w.isalpha() and len(w) > 3 else w for w in words(text)]


def bleu_tokenizer(texts: Iterable[str]) -> str:
    """sacrebleu's tokenizer for these texts: `char` for Japanese, `zh` for Chinese, `intl` for other
    non-Latin scripts, `13a` otherwise. (ja-mecab and ko-mecab would need MeCab installed.)"""
    joined = "\n".join(texts)
    if _HAS_KANA.search(joined):
        return "char"
    if _HAS_HAN.search(joined):
        return "zh"
    return "intl" if _HAS_NON_ASCII_LETTER.search(joined) else "13a"
