"""LlamaIndex's own tokenizer as ogmem's token counter, looked up at every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from llama_index.core.utils import get_tokenizer


class LlamaIndexTokenizer:
    """What ``ChatMemoryBuffer`` counts with: ``Settings.tokenizer``, else tiktoken.

    Resolved at every call, not at import or construction, so a later
    ``Settings.tokenizer = ...`` is honoured and importing the adapter loads no
    tokenizer. Usable both as a ``tokenizer_fn`` and as an ogmem ``TokenCounter``.
    """

    def __call__(self, text: str) -> list[Any]:
        return get_tokenizer()(text)

    def count(self, text: str) -> int:
        """Tokens of ``text`` under the current LlamaIndex tokenizer."""
        return len(get_tokenizer()(text))

    def current(self) -> Callable[[str], list[Any]]:
        """The tokenizer in effect now (changes when ``Settings.tokenizer`` is set)."""
        return get_tokenizer()

    # One instance per process: SessionManager.shared() keys managers by the counter's
    # identity, so an unpickled copy must be this very object.
    def __reduce__(self) -> str:
        return "DEFAULT_TOKENIZER"


DEFAULT_TOKENIZER: Final = LlamaIndexTokenizer()
