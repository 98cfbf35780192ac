"""``OgmemStore``: LangGraph's long-term ``BaseStore`` kept in ogmem's database.

``create_agent(model, tools, store=OgmemStore())`` (or any LangGraph graph compiled with
``store=``) keeps its long-term memory in the same SQLite file or PostgreSQL schema as the
chat sessions. The memories ogmem extracts about a user live there too, one item per memory
(its value is ``MemoryRecord.to_dict()``, its key the ``memory_id``), under the namespace
``("memories", account_id, user_id, agent_id)``; each label has ``%`` and ``.`` percent-encoded
(``"ada.l@x.org"`` is ``"ada%2El@x%2Eorg"``), because LangGraph labels hold no dot. So
``search(("memories", account_id, user_id))`` lists all of a user's memories, every agent's.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from ogmem_memory.errors import ConfigError, EmbeddingError, InvalidInputError
from ogmem_memory.extract import MemoryRecord
from ogmem_memory.longterm import MEMORY_NAMESPACE, memory_namespace
from ogmem_memory.models import RequestContext
from ogmem_memory.stores.items import (
    DeleteItem,
    GetItem,
    ItemOp,
    ItemResult,
    ItemStore,
    ListNamespaces,
    PutItem,
    SearchItems,
    StoredItem,
    item_store_for,
    open_item_store,
)
from ogmem_memory.stores.lifecycle import Lifecycle

if TYPE_CHECKING:
    from ogmem_memory.manager import SessionManager

__all__ = ["OgmemStore"]

logger = logging.getLogger(__name__)

_TTL_KEYS = frozenset({"default_ttl", "refresh_on_read", "sweep_interval_minutes", "omit_expired"})
_INDEX_KEYS = frozenset({"dims", "embed", "fields"})
_DEFAULT_SWEEP_MINUTES = 5.0  # SqliteStore's default when the config names no interval


def _positive_number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{what} must be a positive number of minutes or None, got {value!r}")
    return float(value)


def _config_dict(value: object, name: str, kind: str, keys: Collection[str]) -> Mapping[str, Any] | None:
    """``value`` as a mapping of known ``keys`` only (None stays None); ConfigError otherwise."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a {kind} dict, got {type(value).__name__}")
    unknown = set(value) - set(keys)
    if unknown:
        raise ConfigError(f"unknown {name} keys {sorted(unknown)}; use {sorted(keys)}")
    return value


def _check_ttl(value: object) -> TTLConfig | None:
    ttl = _config_dict(value, "ttl", "TTLConfig", _TTL_KEYS)
    if ttl is None:
        return None
    _positive_number(ttl.get("default_ttl"), "ttl['default_ttl']")
    _positive_number(ttl.get("sweep_interval_minutes"), "ttl['sweep_interval_minutes']")
    for flag in ("refresh_on_read", "omit_expired"):
        if flag in ttl and not isinstance(ttl[flag], bool):
            raise ConfigError(f"ttl[{flag!r}] must be a bool, got {ttl[flag]!r}")
    return cast(TTLConfig, dict(ttl))


def _check_index(value: object) -> tuple[IndexConfig, Embeddings, list[tuple[str, str | list[str]]]] | None:
    index = _config_dict(value, "index", "IndexConfig", _INDEX_KEYS)
    if index is None:
        return None
    dims = index.get("dims")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ConfigError(f"index['dims'] must be a positive int, got {dims!r}")
    embed = index.get("embed")
    if embed is None:
        raise ConfigError("index['embed'] is required: a LangChain Embeddings or an embedding function")
    if isinstance(embed, str):
        # init_embeddings("provider:model") builds a hosted client: that needs the network and
        # its credentials, which this library never assumes. Build the model yourself.
        raise ConfigError(
            f"index['embed']={embed!r}: provider strings are not resolved here; pass an Embeddings "
            "instance (e.g. init_embeddings(...)) or a function texts -> vectors"
        )
    fields = index.get("fields")
    if fields is not None and (
        not isinstance(fields, list | tuple) or not all(isinstance(f, str) and f for f in fields)
    ):
        raise ConfigError(f"index['fields'] must be a list of paths or None, got {fields!r}")
    try:
        embeddings = ensure_embeddings(embed)
    except ValueError as exc:
        raise ConfigError(f"index['embed'] is not usable: {exc}") from exc
    paths: list[tuple[str, str | list[str]]] = [
        (p, "$" if p == "$" else tokenize_path(p)) for p in (list(fields) if fields else ["$"])
    ]
    return cast(IndexConfig, dict(index)), embeddings, paths


def _check_memory_put(op: PutOp) -> None:
    """Refuse a put that would corrupt the memories ogmem keeps of a user.

    ogmem reads everything at or below ``("memories", account, user, agent)`` as that user's
    memories, so a value there must be a memory record (``MemoryRecord.to_dict()``) of that
    very identity, under its ``memory_id``. Shorter ``"memories"`` namespaces (LangMem's
    ``("memories", user_id)``) are the application's own and take any value.

    Raises:
        InvalidInputError: The value is not such a record, or not at its own place.
    """
    namespace = tuple(op.namespace)
    if op.value is None or len(namespace) < 4 or namespace[0] != MEMORY_NAMESPACE:
        return
    hint = (
        f"namespace {namespace!r} holds ogmem's memories of a user: a value there must be a"
        " MemoryRecord.to_dict() of that (account, user, agent) under its memory_id"
    )
    try:
        record = MemoryRecord.from_dict(op.value)
        home = memory_namespace(RequestContext(record.account_id, record.user_id, record.agent_id))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{hint} ({exc})") from exc
    if namespace != home or op.key != record.memory_id:
        raise InvalidInputError(f"{hint}; this record belongs at {home!r}, key {record.memory_id!r}")


def _fields(stored: StoredItem) -> dict[str, Any]:
    """What LangGraph's ``Item`` and ``SearchItem`` take from a stored item."""
    keys = ("namespace", "key", "value", "created_at", "updated_at")
    return {name: getattr(stored, name) for name in keys}


def _item(stored: StoredItem) -> Item:
    return Item(**_fields(stored))


def _search_item(stored: StoredItem) -> SearchItem:
    return SearchItem(**_fields(stored), score=stored.score)


class _Plan:
    """A batch translated to item operations, waiting for its embeddings. No I/O here."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = ops
        self.docs: list[str] = []  # texts to embed for puts, in order
        self.doc_slots: dict[int, list[tuple[str, int]]] = {}  # op index -> (vector name, docs index)
        self.queries: dict[str, None] = {}  # distinct query texts to embed


class OgmemStore(Lifecycle, BaseStore):
    """LangGraph ``BaseStore`` on ogmem's item store (memory, SQLite or PostgreSQL).

    Same namespace validation and filter semantics as LangGraph's ``SqliteStore``: dotted
    keys address nested fields, operators ``$eq $ne $gt $gte $lt $lte $in $nin``.

    Without ``index``, ``search(query=...)`` ranks by lexical term overlap (``score`` in
    [0, 1]); with it, by cosine similarity of the embedded ``fields``.

    The memories ogmem extracts are items under ``("memories", account_id, user_id,
    agent_id)`` (labels percent-encoded, see the module docs): read, search and delete them
    here like any item. A put at or below such a namespace must be a memory record of that
    identity (``InvalidInputError`` otherwise), because ogmem reads every value there as one.

    Args:
        url: ``None`` (``$OGMEM_DB`` or ``./ogmem.db``), ``"memory://"``, ``"sqlite:///path.db"``
            or ``"postgresql://..."``. Exclusive with ``manager``.
        manager: A ``SessionManager``: use the database of ``manager.store``.
        index: LangGraph's ``IndexConfig`` (``{"dims", "embed", "fields"}``); ``embed`` is a
            LangChain ``Embeddings`` or a (sync or async) function ``texts -> vectors``.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` and ``sweep_interval_minutes`` in
            minutes, ``refresh_on_read`` default ``True``, ``omit_expired`` default ``False``).

    Raises:
        ConfigError: Conflicting or invalid options (checked without I/O).
    """

    supports_ttl: bool = True

    def __init__(
        self,
        url: str | None = None,
        *,
        manager: SessionManager | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        if manager is not None and url is not None:
            raise ConfigError("pass either manager= or url=, not both")
        checked = _check_index(index)
        self.ttl_config = _check_ttl(ttl)
        self.index_config: IndexConfig | None = checked[0] if checked else None
        self.embeddings: Embeddings | None = checked[1] if checked else None
        self._fields = checked[2] if checked else []
        self._owns_items = manager is None
        self._items: ItemStore = (
            item_store_for(manager.store)
            if manager is not None
            else open_item_store(url or os.environ.get("OGMEM_DB") or "ogmem.db")
        )
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()
        self._sweeper_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OgmemStore({self._items!r}, index={self.index_config is not None})"

    @property
    def item_store(self) -> ItemStore:
        """The ogmem item store underneath (shared with the manager when ``manager=`` was given)."""
        return self._items

    # -- lifecycle ------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the tables (idempotent; the first operation also does it)."""
        self._items.setup()

    async def asetup(self) -> None:
        """Async ``setup``."""
        await self._items.asetup()

    def close(self) -> None:
        """Stop the TTL sweeper and close the item store if this store opened it. Idempotent."""
        self.stop_ttl_sweeper()
        if self._owns_items:
            self._items.close()

    # -- batch ----------------------------------------------------------------------------

    def _plan(self, ops: Iterable[Op]) -> _Plan:
        plan = _Plan(list(ops))
        for op in plan.ops:
            if not isinstance(op, GetOp | PutOp | SearchOp | ListNamespacesOp):
                raise InvalidInputError(f"unknown operation type {type(op).__name__}")
            # Every op is checked before any is run: a bad one in a batch changes nothing.
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                _check_memory_put(op)
            if isinstance(op, ListNamespacesOp):
                kinds = [c.match_type for c in op.match_conditions or ()]
                if any(kinds.count(k) > 1 for k in kinds) or not set(kinds) <= {"prefix", "suffix"}:
                    raise InvalidInputError(f"at most one prefix and one suffix condition, got {kinds}")
        if self.embeddings is None:
            return plan
        for i, op in enumerate(plan.ops):
            if isinstance(op, PutOp) and op.value is not None and op.index is not False:
                paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
                slots: list[tuple[str, int]] = []
                for path, tokens in paths:
                    texts = get_text_at_path(op.value, tokens)
                    for n, text in enumerate(texts):
                        slots.append((f"{path}.{n}" if len(texts) > 1 else path, len(plan.docs)))
                        plan.docs.append(text)
                plan.doc_slots[i] = slots
            elif isinstance(op, SearchOp) and op.query:
                plan.queries[op.query] = None
        return plan

    def _check_vectors(self, vectors: Sequence[Sequence[float]], expected: int, what: str) -> None:
        assert self.index_config is not None
        if len(vectors) != expected:
            raise EmbeddingError(f"the embedder returned {len(vectors)} vectors for {expected} {what}")
        dims = self.index_config["dims"]
        for vector in vectors:
            if len(vector) != dims:
                raise EmbeddingError(
                    f"the embedder returned {len(vector)} dimensions; index['dims'] is {dims}"
                )

    def _embed(self, plan: _Plan) -> tuple[list[list[float]], dict[str, list[float]]]:
        if self.embeddings is None or not (plan.docs or plan.queries):
            return [], {}
        try:
            docs = self.embeddings.embed_documents(plan.docs) if plan.docs else []
            queries = {q: self.embeddings.embed_query(q) for q in plan.queries}
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {type(exc).__name__}: {exc}") from exc
        self._check_vectors(docs, len(plan.docs), "texts")
        self._check_vectors(list(queries.values()), len(plan.queries), "queries")
        return docs, queries

    async def _aembed(self, plan: _Plan) -> tuple[list[list[float]], dict[str, list[float]]]:
        if self.embeddings is None or not (plan.docs or plan.queries):
            return [], {}
        try:
            docs = await self.embeddings.aembed_documents(plan.docs) if plan.docs else []
            queries = {q: await self.embeddings.aembed_query(q) for q in plan.queries}
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {type(exc).__name__}: {exc}") from exc
        self._check_vectors(docs, len(plan.docs), "texts")
        self._check_vectors(list(queries.values()), len(plan.queries), "queries")
        return docs, queries

    def _item_ops(
        self, plan: _Plan, docs: list[list[float]], queries: dict[str, list[float]]
    ) -> list[ItemOp]:
        omit = bool(self.ttl_config and self.ttl_config.get("omit_expired", False))
        out: list[ItemOp] = []
        for i, op in enumerate(plan.ops):
            if isinstance(op, GetOp):
                out.append(GetItem(tuple(op.namespace), str(op.key), op.refresh_ttl, omit))
            elif isinstance(op, PutOp):
                if op.value is None:
                    out.append(DeleteItem(tuple(op.namespace), str(op.key)))
                    continue
                vectors = {name: docs[n] for name, n in plan.doc_slots.get(i, [])}
                # put(index=[...]) also narrows what lexical search reads, as it narrows embedding.
                text = None
                if isinstance(op.index, list):
                    text = "\n".join(
                        t for p in op.index for t in get_text_at_path(op.value, tokenize_path(p))
                    )
                out.append(PutItem(tuple(op.namespace), str(op.key), op.value, op.ttl, text, vectors or None))
            elif isinstance(op, SearchOp):
                vector = queries.get(op.query) if op.query else None
                out.append(
                    SearchItems(
                        tuple(op.namespace_prefix),
                        op.filter,
                        op.limit,
                        op.offset,
                        op.query if self.embeddings is None else None,
                        vector,
                        op.refresh_ttl,
                        omit,
                    )
                )
            else:
                conditions = {c.match_type: tuple(c.path) for c in op.match_conditions or ()}
                out.append(
                    ListNamespaces(
                        conditions.get("prefix"),
                        conditions.get("suffix"),
                        op.max_depth,
                        op.limit,
                        op.offset,
                        omit,
                    )
                )
        return out

    @staticmethod
    def _results(plan: _Plan, results: Sequence[ItemResult]) -> list[Result]:
        out: list[Result] = []
        for op, result in zip(plan.ops, results, strict=True):
            if isinstance(op, GetOp):
                out.append(_item(result) if isinstance(result, StoredItem) else None)
            elif isinstance(op, SearchOp):
                out.append([_search_item(r) for r in cast(list[StoredItem], result)])
            elif isinstance(op, ListNamespacesOp):
                out.append(cast(list[tuple[str, ...]], result))
            else:
                out.append(None)
        return out

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph ops in one ogmem transaction (embeddings are computed before it).

        Raises:
            InvalidNamespaceError: A namespace breaks LangGraph's rules (nothing is written).
            InvalidInputError: Another invalid op, filter or value (nothing is written).
            EmbeddingError: The index's embedder failed or returned unusable vectors.
        """
        plan = self._plan(ops)
        docs, queries = self._embed(plan)
        return self._results(plan, self._items.batch(self._item_ops(plan, docs, queries)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async ``batch``: native async embeddings, the store call in a thread."""
        plan = self._plan(ops)
        docs, queries = await self._aembed(plan)
        return self._results(plan, await self._items.abatch(self._item_ops(plan, docs, queries)))

    # -- TTL --------------------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete every expired item now; how many were deleted."""
        return self._items.sweep_expired()

    async def asweep_ttl(self) -> int:
        """Async ``sweep_ttl``."""
        return await self._items.asweep_expired()

    def start_ttl_sweeper(
        self, sweep_interval_minutes: int | float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` in a daemon thread.

        The interval defaults to ``ttl["sweep_interval_minutes"]``, then 5 minutes. Without a
        ``ttl`` config nothing starts and the future is already done. Cancelling the future
        stops the sweeper, like :meth:`stop_ttl_sweeper`.
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.add_done_callback(lambda f: self._sweeper_stop.set() if f.cancelled() else None)
        if not self.ttl_config:
            future.set_result(None)
            return future
        interval = _positive_number(sweep_interval_minutes, "sweep_interval_minutes") or (
            self.ttl_config.get("sweep_interval_minutes") or _DEFAULT_SWEEP_MINUTES
        )
        with self._sweeper_lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return future  # already running: this future can still cancel it
            self._sweeper_stop.clear()

            def loop() -> None:
                try:
                    while not self._sweeper_stop.wait(interval * 60):
                        try:
                            swept = self.sweep_ttl()
                            if swept:
                                logger.info("ogmem store swept %d expired items", swept)
                        except Exception:
                            logger.exception("ogmem store TTL sweep failed; retrying at the next interval")
                    if not future.done():
                        future.set_result(None)
                except BaseException as exc:  # pragma: no cover - a bug in the loop itself
                    if not future.done():
                        future.set_exception(exc)

            self._sweeper = threading.Thread(target=loop, name="ogmem-ttl-sweeper", daemon=True)
            self._sweeper.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; ``True`` when it stopped (or was not running)."""
        with self._sweeper_lock:
            thread = self._sweeper
            if thread is None or not thread.is_alive():
                self._sweeper = None
                return True
            self._sweeper_stop.set()
        thread.join(timeout)
        if thread.is_alive():
            return False
        with self._sweeper_lock:
            if self._sweeper is thread:
                self._sweeper = None
        return True
