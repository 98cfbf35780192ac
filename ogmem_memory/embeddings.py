"""Embedders for recall by meaning: one validated interface over every kind of embedding model.

:func:`as_embedder` accepts a LangChain ``Embeddings`` (``embed_documents``/``embed_query``), a
LlamaIndex ``BaseEmbedding`` (``get_text_embedding_batch``/``get_query_embedding``), any object
with the :class:`Embedder` methods, or a plain ``callable(list[str]) -> list[list[float]]``, and
returns a :class:`CheckedEmbedder`: it batches, checks every result (one vector per text, equal
dimensions, finite numbers) and wraps every failure in :data:`EmbeddingError`. Detection is by
duck typing, so this module imports no framework.

:class:`WordLlamaEmbedder` (extra ``ogmem-memory[embeddings]``) runs offline on the 16 MB
WordLlama model shipped inside the ``wordllama`` wheel: no API key, no download.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from ogmem_memory.errors import ConfigError, EmbeddingError, InvalidInputError, OgmemError
from ogmem_memory.vectors import as_finite_vector

# One call to the wrapped model embeds at most this many texts: it bounds request size and
# memory, and stays under the per-request limits of hosted APIs.
DEFAULT_BATCH_SIZE: Final = 256

EmbedderKind = Literal["embeddings", "llama_index", "callable"]

_INSTALL_HINT: Final = 'WordLlamaEmbedder needs: pip install "ogmem-memory[embeddings]"'


class Embedder(Protocol):
    """What the memory needs from an embedding model.

    ``embed_documents`` embeds stored messages (batched, in commits); ``embed_query`` embeds the
    recall query (once per ``get_context``). Models that embed queries differently from
    documents (instruction-tuned ones) keep that distinction.
    """

    @property
    def dims(self) -> int | None:
        """Dimensions of every vector, or ``None`` until known."""
        ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """The vector of a search query."""
        ...


def _has_method(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def _is_async_callable(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004


def _describe(obj: object, kind: EmbedderKind) -> str:
    """A best-effort name of the model: for messages, display, and noticing a changed model."""
    own = getattr(obj, "name", None)
    if kind == "embeddings" and isinstance(own, str) and own:
        return own
    if kind == "callable":
        return str(getattr(obj, "__qualname__", type(obj).__qualname__))
    for attr in ("model", "model_name"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value and value != "unknown":
            return f"{type(obj).__name__}({value})"
    return type(obj).__name__


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return value


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("texts must be a list of strings, not one string (use embed_query)")
    if not isinstance(texts, Sequence):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{index}] is {type(text).__name__}, not str")
    return list(texts)


class CheckedEmbedder:
    """An embedding model behind one interface, with batching and validated results.

    Build it with :func:`as_embedder`. Every vector returned is a ``list[float]`` of finite
    numbers, of the same dimension for the life of the object (the first result fixes it unless
    it was declared). Thread-safe if the wrapped model is.

    Attributes:
        wrapped: The model given to :func:`as_embedder`.
        kind: How it is called: ``"embeddings"`` (``embed_documents``/``embed_query``: LangChain
            and :class:`Embedder`), ``"llama_index"`` or ``"callable"``.
        name: A best-effort model name.
        batch_size: Most texts per call to the model.
    """

    def __init__(
        self,
        wrapped: object,
        *,
        kind: EmbedderKind,
        name: str,
        batch_size: int,
        dims: int | None,
    ) -> None:
        self.wrapped = wrapped
        self.kind: EmbedderKind = kind
        self.name = name
        self.batch_size = batch_size
        self._dims = dims
        self._dims_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CheckedEmbedder({self.name!r}, kind={self.kind!r}, dims={self._dims})"

    @property
    def dims(self) -> int | None:
        """Dimensions of every vector: declared, or fixed by the first result; ``None`` before."""
        return self._dims

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts in batches of at most :attr:`batch_size`, one vector per text, in order.

        Raises:
            InvalidInputError: ``texts`` is not a list of strings.
            EmbeddingError: The model raised, or returned the wrong number of vectors, unequal
                or changed dimensions, non-numbers, NaN or infinity.
        """
        items = _check_texts(texts)
        out: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            out.extend(self._check_batch(self._call(self._sync_documents, batch), len(batch)))
        return out

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query.

        Raises:
            InvalidInputError: ``text`` is not a string.
            EmbeddingError: The model raised or returned an unusable vector.
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be str, got {type(text).__name__}")
        if self.kind == "callable":
            return self._check_batch(self._call(self._sync_documents, [text]), 1)[0]
        return self._check_one(self._call(self._sync_query, text))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`: the model's native async methods, else a worker thread."""
        items = _check_texts(texts)
        out: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            result = await self._acall(self._async_documents, batch)
            out.extend(self._check_batch(result, len(batch)))
        return out

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`: the model's native async methods, else a worker thread."""
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be str, got {type(text).__name__}")
        if self.kind == "callable":
            return self._check_batch(await self._acall(self._async_documents, [text]), 1)[0]
        return self._check_one(await self._acall(self._async_query, text))

    def ensure_dims(self) -> int:
        """The dimensions, embedding one probe query if they are not known yet.

        For stores that must size a column (pgvector's ``vector(n)``) before the first write.
        """
        if self._dims is None:
            self.embed_query("dimension probe")
        assert self._dims is not None  # set by the validated call above
        return self._dims

    # -- calling the model -------------------------------------------------------------------

    def _sync_documents(self, batch: list[str]) -> object:
        model: Any = self.wrapped
        if self.kind == "embeddings":
            return model.embed_documents(batch)
        if self.kind == "llama_index":
            return model.get_text_embedding_batch(batch)
        return model(batch)

    def _sync_query(self, text: str) -> object:
        model: Any = self.wrapped
        if self.kind == "llama_index":
            return model.get_query_embedding(text)
        return model.embed_query(text)

    def _async_documents(self, batch: list[str]) -> Awaitable[object]:
        model: Any = self.wrapped
        if self.kind == "embeddings" and _has_method(model, "aembed_documents"):
            return model.aembed_documents(batch)  # type: ignore[no-any-return]
        if self.kind == "llama_index" and _has_method(model, "aget_text_embedding_batch"):
            return model.aget_text_embedding_batch(batch)  # type: ignore[no-any-return]
        return asyncio.to_thread(self._sync_documents, batch)

    def _async_query(self, text: str) -> Awaitable[object]:
        model: Any = self.wrapped
        if self.kind == "embeddings" and _has_method(model, "aembed_query"):
            return model.aembed_query(text)  # type: ignore[no-any-return]
        if self.kind == "llama_index" and _has_method(model, "aget_query_embedding"):
            return model.aget_query_embedding(text)  # type: ignore[no-any-return]
        return asyncio.to_thread(self._sync_query, text)

    def _call(self, fn: Callable[[Any], object], arg: object) -> object:
        try:
            result = fn(arg)
        except OgmemError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedder {self.name} failed: {type(exc).__name__}: {exc}") from exc
        if inspect.isawaitable(result):
            # An async function passed as a sync callable: close the coroutine so it is not
            # reported as never awaited, and say what to pass instead.
            if inspect.iscoroutine(result):
                result.close()
            raise EmbeddingError(
                f"embedder {self.name} returned an awaitable from a sync call; pass a sync callable"
            )
        return result

    async def _acall(self, fn: Callable[[Any], Awaitable[object]], arg: object) -> object:
        try:
            return await fn(arg)
        except OgmemError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedder {self.name} failed: {type(exc).__name__}: {exc}") from exc

    # -- validation ----------------------------------------------------------------------------

    def _check_batch(self, result: object, count: int) -> list[list[float]]:
        if hasattr(result, "tolist") and hasattr(result, "shape"):
            result = result.tolist()  # a numpy array: one conversion instead of one per row
        if isinstance(result, str | bytes | Mapping) or not isinstance(result, Sequence):
            raise EmbeddingError(
                f"embedder {self.name} returned {type(result).__name__}, not a list of vectors"
            )
        if len(result) != count:
            raise EmbeddingError(f"embedder {self.name} returned {len(result)} vectors for {count} texts")
        vectors = [self._vector(item, f"vector {index}") for index, item in enumerate(result)]
        self._fix_dims(vectors)
        return vectors

    def _check_one(self, result: object) -> list[float]:
        vector = self._vector(result, "query vector")
        self._fix_dims([vector])
        return vector

    def _vector(self, item: object, what: str) -> list[float]:
        if hasattr(item, "tolist") and hasattr(item, "shape"):
            item = item.tolist()
        if isinstance(item, Mapping) or not isinstance(item, Sequence):
            raise EmbeddingError(f"embedder {self.name} returned {type(item).__name__} as {what}")
        try:
            return as_finite_vector(item, what)
        except InvalidInputError as exc:
            raise EmbeddingError(f"embedder {self.name}: {exc}") from None

    def _fix_dims(self, vectors: list[list[float]]) -> None:
        sizes = {len(v) for v in vectors}
        if len(sizes) > 1:
            raise EmbeddingError(
                f"embedder {self.name} returned vectors of unequal dimensions {sorted(sizes)}"
            )
        if not sizes:
            return
        (size,) = sizes
        with self._dims_lock:
            if self._dims is None:
                self._dims = size
            elif self._dims != size:
                raise EmbeddingError(
                    f"embedder {self.name} returned {size}-dimension vectors, expected {self._dims}"
                )


def as_embedder(
    obj: object,
    *,
    batch_size: int | None = None,
    dims: int | None = None,
    name: str | None = None,
) -> CheckedEmbedder:
    """Wrap an embedding model so the memory can call and trust it.

    Args:
        obj: A LangChain ``Embeddings``, any object with ``embed_documents``/``embed_query``
            (an :class:`Embedder`, such as :class:`WordLlamaEmbedder`), a LlamaIndex
            ``BaseEmbedding``, a sync ``callable(list[str]) -> list[list[float]]``, or a
            :class:`CheckedEmbedder` (returned as is when no option is given).
        batch_size: Most texts per call to the model (default :data:`DEFAULT_BATCH_SIZE`).
        dims: The expected dimensions, when known; by default the model's own ``dims``
            attribute if it has an int one, else fixed by the first result.
        name: A name for messages and display (default: derived from the model).

    Returns:
        The validated embedder.

    Raises:
        ConfigError: ``obj`` is none of the above (a class instead of an instance, an async
            callable, a string...), or an option is invalid or contradicts the model.
    """
    if isinstance(obj, CheckedEmbedder):
        if batch_size is None and dims is None and name is None:
            return obj
        obj = obj.wrapped
    if batch_size is not None:
        _check_positive_int(batch_size, "batch_size")
    if dims is not None:
        _check_positive_int(dims, "dims")
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    if isinstance(obj, type):
        raise ConfigError(f"embedder must be an instance, got the class {obj.__qualname__}")
    kind: EmbedderKind
    # LlamaIndex first: a BaseEmbedding is also callable (on nodes), which must not win.
    if _has_method(obj, "get_text_embedding_batch") and _has_method(obj, "get_query_embedding"):
        kind = "llama_index"
    elif _has_method(obj, "embed_documents") and _has_method(obj, "embed_query"):
        kind = "embeddings"
    elif callable(obj) and not isinstance(obj, str | bytes):
        if _is_async_callable(obj):
            raise ConfigError("embedder must be a sync callable; wrap an async one in an Embeddings class")
        kind = "callable"
    else:
        raise ConfigError(
            f"embedder must be a LangChain Embeddings, a LlamaIndex BaseEmbedding or a "
            f"callable(list[str]) -> list[list[float]], got {type(obj).__name__}"
        )
    own_dims = getattr(obj, "dims", None)
    if isinstance(own_dims, int) and not isinstance(own_dims, bool) and own_dims > 0:
        if dims is not None and dims != own_dims:
            raise ConfigError(f"dims={dims} contradicts the model's own dims={own_dims}")
        dims = own_dims
    return CheckedEmbedder(
        obj,
        kind=kind,
        name=name or _describe(obj, kind),
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        dims=dims,
    )


# -- WordLlama -------------------------------------------------------------------------------

# The wheel ships only this configuration's 256-dimension weights; smaller sizes are its
# Matryoshka truncations (the first n dimensions), which WordLlama supports natively.
_WORDLLAMA_CONFIG: Final = "l2_supercat"
_WORDLLAMA_SHIPPED_DIMS: Final = 256
WORDLLAMA_DIMS: Final = (64, 128, 256)


def _require_wordllama() -> None:
    try:
        found = importlib.util.find_spec("wordllama") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(_INSTALL_HINT)


@contextlib.contextmanager
def _root_logging_preserved() -> Iterator[None]:
    """Undo what importing wordllama does to logging: it calls ``logging.basicConfig(INFO)``,
    which would make every library's INFO records appear on the application's stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _load_wordllama(dims: int) -> Any:
    try:
        with _root_logging_preserved():
            # import_module: wordllama has no type information, and this keeps mypy quiet
            # without a per-module override.
            wordllama = importlib.import_module("wordllama")
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if wordllama.__file__ is None:  # a namespace package: not the wheel, whose files we need
        raise EmbeddingError(
            f"wordllama at {list(wordllama.__path__)} is not an installed wheel; {_INSTALL_HINT}"
        )
    folder = Path(wordllama.__file__).parent
    try:
        # cache_dir = the package folder: its weights/ and tokenizers/ are laid out as
        # WordLlama's cache, so nothing is fetched; disable_download makes a missing file an
        # error instead of a request to a model hub.
        return wordllama.WordLlama.load(
            config=_WORDLLAMA_CONFIG,
            cache_dir=folder,
            dim=_WORDLLAMA_SHIPPED_DIMS,
            trunc_dim=None if dims == _WORDLLAMA_SHIPPED_DIMS else dims,
            disable_download=True,
        )
    except Exception as exc:
        raise EmbeddingError(
            f"could not load the WordLlama model shipped in {folder} ({type(exc).__name__}: {exc}); "
            'reinstall with: pip install --force-reinstall "ogmem-memory[embeddings]"'
        ) from exc


class WordLlamaEmbedder:
    """Offline embeddings from WordLlama (``l2_supercat``), the model inside the ``wordllama`` wheel.

    No API key, no network: the model loads from the installed package on first use (about
    0.5 s, once per instance, thread-safe), then embeds 100 chat messages in about 12 ms on an
    idle core. Vectors are L2-normalised; an empty text gives the zero vector. It is a
    static word-embedding model, so it matches paraphrases by their words' meanings (``cat`` ~
    ``pet``) but not word order.

    Args:
        dims: 256 (default), or 128 or 64 (the model's truncations: smaller, a little less exact).
        batch_size: Texts per internal batch.

    Raises:
        ImportError: ``wordllama`` is not installed (``pip install "ogmem-memory[embeddings]"``).
        ConfigError: ``dims`` or ``batch_size`` is invalid.
    """

    def __init__(self, *, dims: int = _WORDLLAMA_SHIPPED_DIMS, batch_size: int = 64) -> None:
        if isinstance(dims, bool) or dims not in WORDLLAMA_DIMS:
            raise ConfigError(f"WordLlamaEmbedder dims must be one of {WORDLLAMA_DIMS}, got {dims!r}")
        self._batch_size = _check_positive_int(batch_size, "batch_size")
        # Fail at construction, not in a background commit, when the extra is missing. This
        # looks the package up; it loads nothing.
        _require_wordllama()
        self._dims = dims
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WordLlamaEmbedder(dims={self._dims})"

    @property
    def dims(self) -> int:
        """Dimensions of every vector."""
        return self._dims

    @property
    def name(self) -> str:
        """The model's name, with its dimensions (vectors of different sizes do not mix)."""
        return f"wordllama/{_WORDLLAMA_CONFIG}/{self._dims}"

    def load(self) -> None:
        """Load the model now instead of on first use (for example at application start)."""
        self._loaded()

    def _loaded(self) -> Any:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = _load_wordllama(self._dims)
                model = self._model
        return model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order.

        Raises:
            InvalidInputError: ``texts`` is not a list of strings.
            EmbeddingError: The shipped model files could not be loaded.
        """
        items = _check_texts(texts)
        if not items:
            return []
        matrix = self._loaded().embed(items, norm=False, return_np=True, batch_size=self._batch_size)
        # Normalise here, not with embed(norm=True): that divides the zero vector of an empty
        # text by zero and returns NaN.
        import numpy

        norms = numpy.linalg.norm(matrix, axis=1, keepdims=True)
        unit = numpy.divide(matrix, norms, out=numpy.zeros_like(matrix), where=norms > 0)
        vectors: list[list[float]] = unit.tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """The unit vector of a search query (WordLlama embeds queries and documents alike)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be str, got {type(text).__name__}")
        return self.embed_documents([text])[0]


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "WORDLLAMA_DIMS",
    "CheckedEmbedder",
    "Embedder",
    "EmbedderKind",
    "EmbeddingError",
    "WordLlamaEmbedder",
    "as_embedder",
]
