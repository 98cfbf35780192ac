"""Embedders: duck-typed wrapping, batching, validation of every result, WordLlama offline."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.embeddings import MockEmbedding

from ogmem_memory.embeddings import (
    DEFAULT_BATCH_SIZE,
    CheckedEmbedder,
    Embedder,
    EmbeddingError,
    WordLlamaEmbedder,
    as_embedder,
)
from ogmem_memory.errors import ConfigError, InvalidInputError, OgmemError
from ogmem_memory.vectors import cosine_top_k, pack


def digest_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic vector per text, for wiring tests only: it carries no meaning."""
    raw = hashlib.sha256(text.encode()).digest()
    return [(raw[i] - 127.5) / 127.5 for i in range(dims)]


class RecordingCallable:
    """A plain ``callable(list[str]) -> list[list[float]]`` that records its batches."""

    def __init__(self, dims: int = 8) -> None:
        self.dims_out = dims
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [digest_vector(t, self.dims_out) for t in texts]


class Returning:
    """A callable returning a fixed (bad) result, whatever it is asked."""

    def __init__(self, result: object) -> None:
        self.result = result

    def __call__(self, texts: list[str]) -> object:
        return self.result


# -- what as_embedder accepts ------------------------------------------------------------------


def test_a_langchain_embeddings_is_called_through_its_own_methods() -> None:
    model = DeterministicFakeEmbedding(size=16)
    embedder = as_embedder(model)
    assert isinstance(embedder, CheckedEmbedder)
    assert embedder.kind == "embeddings"
    assert embedder.dims is None
    assert embedder.embed_documents(["alpha", "beta"]) == model.embed_documents(["alpha", "beta"])
    assert embedder.dims == 16
    assert embedder.embed_query("alpha") == model.embed_query("alpha")
    assert all(type(x) is float for x in embedder.embed_query("alpha"))  # numpy floats converted


async def test_a_langchain_embeddings_async_path() -> None:
    model = DeterministicFakeEmbedding(size=4)
    embedder = as_embedder(model)
    assert await embedder.aembed_documents(["x", "y"]) == model.embed_documents(["x", "y"])
    assert await embedder.aembed_query("x") == model.embed_query("x")


def test_a_llama_index_embedding_is_called_through_its_own_methods() -> None:
    model = MockEmbedding(embed_dim=8)
    assert callable(model)  # a BaseEmbedding is callable on nodes: that path must not be taken
    embedder = as_embedder(model)
    assert embedder.kind == "llama_index"
    assert embedder.embed_documents(["a", "b", "c"]) == [[0.5] * 8] * 3
    assert embedder.embed_query("q") == [0.5] * 8
    assert embedder.dims == 8


async def test_a_llama_index_embedding_async_path() -> None:
    embedder = as_embedder(MockEmbedding(embed_dim=3))
    assert await embedder.aembed_documents(["a"]) == [[0.5] * 3]
    assert await embedder.aembed_query("q") == [0.5] * 3


def test_a_plain_callable_embeds_queries_as_one_text_batches() -> None:
    model = RecordingCallable()
    embedder = as_embedder(model)
    assert embedder.kind == "callable"
    assert embedder.embed_query("where?") == digest_vector("where?")
    assert model.batches == [["where?"]]


async def test_a_plain_callable_runs_in_a_thread_on_the_async_path() -> None:
    callers: list[str] = []

    def model(texts: list[str]) -> list[list[float]]:
        callers.append(threading.current_thread().name)
        return [digest_vector(t) for t in texts]

    embedder = as_embedder(model)
    assert await embedder.aembed_documents(["a", "b"]) == [digest_vector("a"), digest_vector("b")]
    assert await embedder.aembed_query("a") == digest_vector("a")
    assert threading.main_thread().name not in callers  # never blocks the event loop


def test_an_object_with_the_embedder_methods_and_dims_declares_them() -> None:
    class Own:
        dims = 8

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [digest_vector(t) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return digest_vector("query: " + text)

    embedder = as_embedder(Own())
    assert embedder.dims == 8
    assert embedder.embed_query("x") == digest_vector("query: x")
    with pytest.raises(ConfigError, match="contradicts"):
        as_embedder(Own(), dims=16)


def test_as_embedder_is_idempotent_and_options_rewrap() -> None:
    embedder = as_embedder(RecordingCallable())
    assert as_embedder(embedder) is embedder
    again = as_embedder(embedder, batch_size=2, name="mine")
    assert again is not embedder
    assert again.wrapped is embedder.wrapped
    assert (again.batch_size, again.name) == (2, "mine")
    assert embedder.batch_size == DEFAULT_BATCH_SIZE


@pytest.mark.parametrize(
    "bad",
    [None, "openai", 42, object(), [digest_vector("a")], DeterministicFakeEmbedding],
    ids=["none", "string", "int", "object", "list", "a-class"],
)
def test_anything_else_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="embedder must be"):
        as_embedder(bad)


def test_an_async_callable_is_refused_up_front() -> None:
    async def model(texts: list[str]) -> list[list[float]]:
        return []

    with pytest.raises(ConfigError, match="sync callable"):
        as_embedder(model)


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"batch_size": True}, {"batch_size": 2.0}, {"dims": 0}, {"dims": "8"}, {"name": ""}],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        as_embedder(RecordingCallable(), **kwargs)


# -- batching and input checks -----------------------------------------------------------------


def test_documents_are_embedded_in_bounded_batches_in_order() -> None:
    model = RecordingCallable()
    texts = [f"message {i}" for i in range(10)]
    vectors = as_embedder(model, batch_size=3).embed_documents(texts)
    assert [len(b) for b in model.batches] == [3, 3, 3, 1]
    assert [t for b in model.batches for t in b] == texts
    assert vectors == [digest_vector(t) for t in texts]


async def test_async_batches_are_bounded_too() -> None:
    model = RecordingCallable()
    await as_embedder(model, batch_size=4).aembed_documents([str(i) for i in range(9)])
    assert [len(b) for b in model.batches] == [4, 4, 1]


def test_no_texts_make_no_call() -> None:
    model = RecordingCallable()
    assert as_embedder(model).embed_documents([]) == []
    assert model.batches == []


@pytest.mark.parametrize("texts", ["one string", ["ok", 3], None, [b"bytes"]])
def test_texts_must_be_a_list_of_strings(texts: object) -> None:
    model = RecordingCallable()
    with pytest.raises(InvalidInputError, match="texts"):
        as_embedder(model).embed_documents(texts)  # type: ignore[arg-type]
    assert model.batches == []


async def test_the_query_must_be_a_string() -> None:
    embedder = as_embedder(RecordingCallable())
    with pytest.raises(InvalidInputError, match="query must be str"):
        embedder.embed_query(["not", "a", "string"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="query must be str"):
        await embedder.aembed_query(None)  # type: ignore[arg-type]


# -- validation of results ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "match"),
    [
        ([[1.0, 2.0]], "returned 1 vectors for 2 texts"),
        ([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]], "returned 3 vectors for 2 texts"),
        ([[1.0, 2.0], [1.0]], "unequal dimensions"),
        ([[1.0, math.nan], [1.0, 2.0]], "non-finite"),
        ([[1.0, 2.0], [math.inf, 2.0]], "non-finite"),
        ([[], []], "vector 0 is empty"),
        ([["1", "2"], ["3", "4"]], "not a number"),
        ([[True, False], [1.0, 0.0]], "not a number"),
        ([None, None], "NoneType as vector 0"),
        ([{"a": 1.0}, {"b": 2.0}], "dict as vector 0"),
        (None, "NoneType, not a list of vectors"),
        ("vectors", "str, not a list of vectors"),
        ({"a": [1.0]}, "dict, not a list of vectors"),
        (3.5, "float, not a list of vectors"),
    ],
)
def test_a_bad_result_is_an_embedding_error(result: object, match: str) -> None:
    embedder = as_embedder(Returning(result), name="bad-model")
    with pytest.raises(EmbeddingError, match=match) as info:
        embedder.embed_documents(["a", "b"])
    assert "bad-model" in str(info.value)
    assert isinstance(info.value, OgmemError)


def test_a_bad_query_vector_is_an_embedding_error() -> None:
    class BadQuery:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 0.0] for _ in texts]

        def embed_query(self, text: str) -> object:
            return [math.nan, 0.0]

    with pytest.raises(EmbeddingError, match="query vector holds a non-finite"):
        as_embedder(BadQuery()).embed_query("q")


def test_a_numpy_result_is_accepted_and_converted() -> None:
    import numpy

    embedder = as_embedder(lambda texts: numpy.ones((len(texts), 4), dtype=numpy.float32))
    vectors = embedder.embed_documents(["a", "b"])
    assert vectors == [[1.0] * 4, [1.0] * 4]
    assert type(vectors[0][0]) is float


def test_the_first_result_fixes_the_dimensions() -> None:
    sizes = iter([4, 4, 6])
    embedder = as_embedder(lambda texts: [[0.5] * next(sizes) for _ in texts], name="drifting")
    embedder.embed_documents(["a"])
    embedder.embed_query("b")
    with pytest.raises(EmbeddingError, match="returned 6-dimension vectors, expected 4"):
        embedder.embed_documents(["c"])
    assert embedder.dims == 4


def test_declared_dimensions_are_enforced_from_the_first_call() -> None:
    with pytest.raises(EmbeddingError, match="expected 16"):
        as_embedder(RecordingCallable(dims=8), dims=16).embed_documents(["a"])


def test_a_failing_model_is_wrapped_with_its_cause() -> None:
    def model(texts: list[str]) -> list[list[float]]:
        raise ConnectionError("upstream is down")

    with pytest.raises(EmbeddingError, match="failed: ConnectionError: upstream is down") as info:
        as_embedder(model, name="remote").embed_documents(["a"])
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_a_failing_model_is_wrapped_on_the_async_path() -> None:
    class Failing:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("the sync path must not run")

        def embed_query(self, text: str) -> list[float]:
            raise AssertionError("the sync path must not run")

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            raise TimeoutError("slow")

        async def aembed_query(self, text: str) -> list[float]:
            raise TimeoutError("slow")

    embedder = as_embedder(Failing())
    with pytest.raises(EmbeddingError, match="TimeoutError: slow"):
        await embedder.aembed_documents(["a"])
    with pytest.raises(EmbeddingError, match="TimeoutError: slow"):
        await embedder.aembed_query("a")


def test_a_sync_callable_returning_a_coroutine_is_refused_cleanly() -> None:
    async def inner(texts: list[str]) -> list[list[float]]:
        return [[1.0] for _ in texts]

    made: list[Any] = []

    def model(texts: list[str]) -> Any:
        made.append(inner(texts))
        return made[-1]

    with pytest.raises(EmbeddingError, match="returned an awaitable"):
        as_embedder(model).embed_documents(["a"])
    # closed, so it is never reported as "never awaited" at some later garbage collection
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED


def test_ensure_dims_probes_once_when_unknown() -> None:
    model = RecordingCallable(dims=5)
    embedder = as_embedder(model)
    assert embedder.ensure_dims() == 5
    assert embedder.ensure_dims() == 5
    assert len(model.batches) == 1
    declared = RecordingCallable(dims=5)
    assert as_embedder(declared, dims=5).ensure_dims() == 5
    assert declared.batches == []


def test_embedding_errors_are_ogmem_errors() -> None:
    assert issubclass(EmbeddingError, OgmemError)


# -- import hygiene ----------------------------------------------------------------------------


def test_importing_the_modules_pulls_in_no_framework_model_or_numpy() -> None:
    code = (
        "import sys, ogmem_memory.embeddings, ogmem_memory.vectors\n"
        "from ogmem_memory.embeddings import WordLlamaEmbedder\n"
        "WordLlamaEmbedder()\n"  # constructing loads nothing either
        "heavy = {'langchain', 'langchain_core', 'llama_index', 'wordllama', 'numpy', 'tokenizers',"
        " 'safetensors', 'requests', 'huggingface_hub'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- WordLlama ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordllama() -> Iterator[WordLlamaEmbedder]:
    embedder = WordLlamaEmbedder()
    embedder.load()
    yield embedder


FACTS_AND_QUESTIONS = [
    ("My cat is called Whiskers", "What is the name of my pet?"),
    ("We are flying to Japan in April", "Where are we travelling for the holiday?"),
    ("My daughter Emma turns seven next Tuesday", "When is my child's birthday?"),
    ("I work as a nurse at the city hospital", "What is my job?"),
    ("I am allergic to peanuts", "Which foods should I avoid eating?"),
    ("I drive a red Toyota Corolla", "What car do I own?"),
]
DISTRACTORS = [
    "The train to Berlin leaves at half past seven.",
    "I finally fixed the leaking kitchen tap yesterday.",
    "Our quarterly budget review is scheduled for Thursday.",
    "She prefers her coffee black with no sugar.",
    "The server crashed because the disk was full.",
    "We planted tomatoes and basil in the garden.",
    "He is learning to play the violin this winter.",
    "The museum opens at nine on weekdays.",
    "My brother moved to Toronto last spring.",
    "Remember to renew the car insurance before March.",
    "The recipe needs two cups of flour and an egg.",
    "I ran ten kilometres along the river this morning.",
    "The meeting notes are in the shared folder.",
    "It rained all weekend so we stayed inside.",
    "The invoice total came to 340 euros.",
    "They are repainting the office walls next week.",
    "My flight was delayed by three hours.",
    "The new laptop has sixteen gigabytes of memory.",
    "We watched a documentary about volcanoes.",
    "The library book is due back on Friday.",
]


def test_wordllama_matches_a_paraphrase_that_shares_no_word(wordllama: WordLlamaEmbedder) -> None:
    embedder = as_embedder(wordllama)
    fact = "My cat is called Whiskers"
    docs = [*DISTRACTORS[:10], fact, *DISTRACTORS[10:]]
    candidates = [(doc, pack(v)) for doc, v in zip(docs, embedder.embed_documents(docs), strict=True)]
    ranked = cosine_top_k(embedder.embed_query("What is the name of my pet?"), candidates, len(docs))
    assert ranked[0][0] == fact
    assert ranked[0][1] > ranked[1][1] + 0.1  # by a clear margin, not a coin toss


def test_wordllama_puts_each_planted_fact_in_its_top_three(wordllama: WordLlamaEmbedder) -> None:
    # A static word-vector model: strong on cat~pet, weaker where a distractor shares a word
    # with the question ("car insurance" vs "What car..."). Top three of 26 is what it does.
    facts = [fact for fact, _ in FACTS_AND_QUESTIONS]
    docs = facts + DISTRACTORS
    candidates = [(doc, pack(v)) for doc, v in zip(docs, wordllama.embed_documents(docs), strict=True)]
    firsts = 0
    for fact, question in FACTS_AND_QUESTIONS:
        top = [doc for doc, _ in cosine_top_k(wordllama.embed_query(question), candidates, 3)]
        assert fact in top, (question, top)
        firsts += top[0] == fact
    assert firsts >= 3


def test_wordllama_dims_and_unit_vectors(wordllama: WordLlamaEmbedder) -> None:
    protocol_view: Embedder = wordllama  # both satisfy the Protocol (checked by mypy)
    checked: Embedder = as_embedder(wordllama)
    assert protocol_view.dims == checked.dims == 256
    assert wordllama.dims == 256
    assert as_embedder(wordllama).dims == 256
    vectors = wordllama.embed_documents(["hello there", "Ünïcödé and 日本語 text", "a"])
    assert [len(v) for v in vectors] == [256, 256, 256]
    for vector in vectors:
        assert math.sqrt(math.fsum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)


def test_wordllama_empty_text_is_the_zero_vector_not_nan(wordllama: WordLlamaEmbedder) -> None:
    empty, word = as_embedder(wordllama).embed_documents(["", "word"])
    assert empty == [0.0] * 256
    assert any(word)


def test_wordllama_is_deterministic_and_batch_independent(wordllama: WordLlamaEmbedder) -> None:
    texts = [f"message {i} about topic {i % 7}" for i in range(150)]  # several internal batches
    together = wordllama.embed_documents(texts)
    for index in (0, 63, 64, 149):
        alone = wordllama.embed_query(texts[index])
        assert alone == pytest.approx(together[index], abs=1e-6)
    assert wordllama.embed_documents(texts) == together


@pytest.mark.parametrize("dims", [64, 128])
def test_wordllama_truncated_sizes(dims: int) -> None:
    embedder = WordLlamaEmbedder(dims=dims)
    assert embedder.dims == dims
    (vector,) = embedder.embed_documents(["a short message"])
    assert len(vector) == dims
    assert embedder.name == f"wordllama/l2_supercat/{dims}"


@pytest.mark.parametrize("kwargs", [{"dims": 512}, {"dims": 0}, {"dims": True}, {"batch_size": 0}])
def test_wordllama_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WordLlamaEmbedder(**kwargs)


def test_wordllama_input_checks(wordllama: WordLlamaEmbedder) -> None:
    with pytest.raises(InvalidInputError):
        wordllama.embed_documents("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        wordllama.embed_query(1)  # type: ignore[arg-type]
    assert wordllama.embed_documents([]) == []


def test_wordllama_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # what an install without the extra sees
    with pytest.raises(ImportError, match=r'pip install "ogmem-memory\[embeddings\]"'):
        WordLlamaEmbedder()


def test_wordllama_loads_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    wordllama_package: Any = importlib.import_module("wordllama")

    loads: list[int] = []
    real_load = wordllama_package.WordLlama.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(wordllama_package.WordLlama, "load", counting_load)
    embedder = WordLlamaEmbedder()
    barrier = threading.Barrier(6)
    results: list[list[float]] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        vector = embedder.embed_query("the same question from every thread")
        with lock:
            results.append(vector)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len(results) == 6
    assert all(r == results[0] for r in results)


async def test_wordllama_async_path_through_as_embedder(wordllama: WordLlamaEmbedder) -> None:
    embedder = as_embedder(wordllama)
    assert await embedder.aembed_query("hello") == wordllama.embed_query("hello")
    assert len(await asyncio.wait_for(embedder.aembed_documents(["a", "b"]), 30)) == 2


# Run in a fresh interpreter with the network cut at the socket layer and a HOME with no
# wordllama cache, so nothing can come from a previous download or an earlier import.
OFFLINE_PRELUDE = """
import os, socket
os.environ["HF_HUB_OFFLINE"] = "1"
def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


def run_offline(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    return subprocess.run(
        [sys.executable, "-c", OFFLINE_PRELUDE + code], capture_output=True, text=True, env=env, timeout=120
    )


def test_wordllama_loads_and_embeds_with_the_network_cut(tmp_path: Path) -> None:
    code = """
import json, logging
from ogmem_memory.embeddings import WordLlamaEmbedder
vectors = WordLlamaEmbedder().embed_documents(["offline works", "no hub needed"])
root = logging.getLogger()
print(json.dumps({"shape": [len(vectors), len(vectors[0])], "handlers": len(root.handlers),
                  "level": root.level}))
"""
    done = run_offline(code, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shape"] == [2, 256]
    # importing wordllama calls logging.basicConfig(INFO); the embedder undoes that
    assert report["handlers"] == 0
    assert report["level"] == logging.WARNING
    assert not (tmp_path / ".cache").exists()  # nothing was cached under HOME


def test_the_network_cut_is_real_the_stock_load_fails_under_it(tmp_path: Path) -> None:
    """Guards the test above: WordLlama.load() with default arguments needs the network."""
    code = """
from wordllama import WordLlama
WordLlama.load()
"""
    done = run_offline(code, tmp_path)
    assert done.returncode != 0
    assert "network disabled by the test" in done.stderr or "Failed to download" in done.stderr
