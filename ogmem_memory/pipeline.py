"""The commit pipeline: threshold checks, background compression, the archive write, merges.

Phase 1 (under the session's buffer lock): plan which active messages to archive and mark
the buffer ``commit_in_progress``. Phase 2 (no lock held, on a daemon worker): compress,
then write the archive and flip the messages in one compare-and-set store transaction that
also checks the session's epoch. Failure of any kind changes nothing in the store: the
messages stay active and a later threshold check retries. Lock order: see ``cache.py``.
"""

from __future__ import annotations

import json
import logging
from copy import deepcopy
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ogmem_memory.cache import mark_stale
from ogmem_memory.compress import run_compression
from ogmem_memory.errors import ConcurrencyError, InvalidInputError, OgmemError
from ogmem_memory.gil import gil_pause
from ogmem_memory.models import (
    ArchiveEntry,
    CommitResult,
    RequestContext,
    SessionHead,
    SessionMessage,
    iso,
    new_archive_id,
    utc_now,
)
from ogmem_memory.policy import CommitPlan, plan_commit, plan_merge, plan_threshold_commit
from ogmem_memory.topics import ARCHIVE_HISTORY_SLOT
from ogmem_memory.validation import check_identifier

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ogmem_memory.buffer import SessionBuffer
    from ogmem_memory.manager import SessionManager

logger = logging.getLogger("ogmem.commit")


def message_dicts(messages: Sequence[SessionMessage]) -> list[dict[str, Any]]:
    """The message dicts a compressor, the quality evaluator and the extractor are given."""
    return [
        {"role": m.role, "content": m.content, "id": m.id, "created_at": iso(m.created_at), "seq": m.seq}
        for m in messages
    ]


# What a commit's phase 1 hands to phase 2: the plan, the task record, the buffer's
# prepare-token fields to restore if the commit fails.
_Started = tuple[CommitPlan, dict[str, Any], dict[str, Any]]

# Quality metrics are advisory: computing them on every commit cost a sixth of its time,
# so one commit in QUALITY_SAMPLE_EVERY (and every commit of a session's first few) is measured.
QUALITY_SAMPLE_EVERY = 8


class CommitPipeline:
    """Commits and merges of one manager's sessions."""

    def __init__(self, manager: SessionManager) -> None:
        self.m = manager

    # -- public entry points (the manager's commit / commit_snapshot) -------------

    def commit(
        self, session_id: str, ctx: RequestContext | None, *, wait: bool, archive_id: str | None
    ) -> CommitResult:
        if archive_id is not None:
            check_identifier(archive_id, "archive_id")

        def begin(buf: SessionBuffer) -> CommitResult | _Started:
            # in the hold of the buffer's lock that checked ctx: the plan is of that incarnation
            if buf.commit_in_progress:  # checked first: "empty" must not mask it (weakness 16)
                return CommitResult(ok=True, archived=False, reason="commit_in_progress")
            plan = plan_commit(buf.messages, self.m.config, keep_recent=False)
            if plan is None:
                return CommitResult(ok=True, archived=False, reason="empty_buffer")
            return (plan, *self._begin(buf, archive_id))

        return self._dispatch(session_id, ctx, begin, wait=wait)

    def commit_snapshot(
        self,
        session_id: str,
        messages: Sequence[SessionMessage],
        ctx: RequestContext | None,
        *,
        wait: bool,
        archive_id: str | None,
    ) -> CommitResult:
        if archive_id is not None:
            check_identifier(archive_id, "archive_id")
        wanted = {m.id for m in messages}

        def begin(buf: SessionBuffer) -> CommitResult | _Started:
            if not wanted:
                return CommitResult(ok=True, archived=False, reason="empty_snapshot")
            if buf.commit_in_progress:
                return CommitResult(ok=True, archived=False, reason="commit_in_progress")
            chosen = tuple(m for m in buf.messages if m.id in wanted)
            if len(chosen) != len(wanted):
                raise InvalidInputError("commit_snapshot messages must be active messages of the session")
            return (CommitPlan(chosen), *self._begin(buf, archive_id))

        return self._dispatch(session_id, ctx, begin, wait=wait)

    def maybe_auto_commit(self, buf: SessionBuffer, ctx: RequestContext | None) -> None:
        """After a write: start a background commit when a threshold is crossed."""
        if not self.m.config.auto_commit or self.m.closed:
            return
        with buf.lock:
            if buf.commit_in_progress or buf.head is None:
                return
            plan = plan_threshold_commit(
                buf.messages, self.m.config, tokens=buf.pending_tokens, turns=buf.turn_count
            )
            if plan is None:
                return
            task, token_state = self._begin(buf, None)
            self.m._workers.submit(self._run, buf, plan, task, token_state, ctx)

    # -- phases -------------------------------------------------------------------

    def _begin(self, buf: SessionBuffer, archive_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        buf.commit_in_progress = True
        self.m._sync_runtime_state_to_session_state(buf)
        token_state = buf.prepare_token_fields()
        buf._clear_prepare_token()  # a commit invalidates a prepare token (M28)
        task = self.m._tasks.register(buf.session_id, archive_id or new_archive_id())
        task["epoch"] = buf.head.epoch if buf.head else None
        return task, token_state

    def _dispatch(
        self,
        session_id: str,
        ctx: RequestContext | None,
        begin: Callable[[SessionBuffer], CommitResult | _Started],
        *,
        wait: bool,
    ) -> CommitResult:
        """Plan with ``begin`` in the hold of the buffer's lock that checks ``ctx``, then run.

        ``begin`` returns a result when there is nothing to commit; otherwise the commit runs
        on a worker, or inline with ``wait``.
        """
        buf, started = self.m._synced_read(session_id, ctx, begin)
        if isinstance(started, CommitResult) or started is None:
            return started or CommitResult(ok=True, archived=False, reason="empty_buffer")
        plan, task, token_state = started
        if not wait:
            self.m._workers.submit(self._run, buf, plan, task, token_state, ctx)
            return CommitResult(
                ok=True,
                archived=False,
                archive_id=task["archive_id"],
                task_id=task["task_id"],
                status="processing",
            )
        self._run(buf, plan, task, token_state, ctx, inline=True)
        snap = self.m._tasks.get(task["task_id"]) or task
        return CommitResult(
            ok=True,
            archived=bool(snap.get("archived")),
            archive_id=task["archive_id"],
            task_id=task["task_id"],
            status=snap["status"],
            error=snap.get("error"),
            archive_uri=snap.get("archive_uri"),
        )

    def _run(
        self,
        buf: SessionBuffer,
        plan: CommitPlan,
        task: dict[str, Any],
        token_state: dict[str, Any],
        ctx: RequestContext | None,
        *,
        inline: bool = False,
    ) -> None:
        """Phase 2: compress (no lock held), then archive atomically; failure changes nothing.

        A background commit abandons a compressor that overruns ``compress_timeout``; an
        inline one (``commit(wait=True)``) runs the compressor on the caller's thread.
        """
        sid = buf.session_id
        try:
            timeout = None if inline else (self.m.config.compress_timeout or None)
            dicts = message_dicts(plan.messages)
            archive = self._build_archive(sid, plan, task["archive_id"], timeout, dicts)
            gil_pause()
            vectors = self._embed(sid, plan)
            self.m.store.commit_archive(
                sid, archive, [m.id for m in plan.messages], epoch=task["epoch"], vectors=vectors
            )
        except BaseException as exc:  # SystemExit in a compressor included: the task must end
            error = str(exc) or type(exc).__name__
            if isinstance(exc, ConcurrencyError):
                logger.info("commit of session %s lost to another writer: %s", sid, error)
            else:
                logger.warning("commit of session %s failed: %s", sid, error)
            with buf.lock:
                buf.commit_in_progress = False
                buf.restore_prepare_token_fields(token_state)
                mark_stale(buf)  # re-read the window from the store before the next decision
            self.m._tasks.update(task, status="failed", archived=False, error=error)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return
        with buf.lock:
            # False: a read after this commit landed already holds it (and the store's counts)
            if self._apply_archives(buf, task["epoch"], replace(archive, session_id=sid)):
                buf.remove_messages_by_id({m.id for m in plan.messages})
                buf.meta.commit_count += 1
                buf.meta.last_commit_at = iso(utc_now())
            buf.commit_in_progress = False
        self.m._tasks.update(
            task,
            status="completed",
            archived=True,
            error=None,
            archive_uri=f"ogmem://{sid}/{archive.archive_id}",
            compression=dict(archive.metadata.get("compression", {})),
            compression_quality=deepcopy(archive.metadata.get("compression_quality")),
        )
        self.m.invalidate_topic_slot(sid, ARCHIVE_HISTORY_SLOT)
        gil_pause()  # between the steps of the work (see ogmem_memory.gil)
        self.merge_once(sid, task["epoch"])
        gil_pause()
        self.m._extract_committed(buf, plan.messages, dicts)
        gil_pause()
        if buf.owner is not None:  # one save per commit: its count and the extraction watermark
            self.m._save_state(buf)
        if self.m.config.auto_commit and not self.m.closed:  # (no next commit to plan without it)
            try:  # the next commit, if due, planned in the hold that checked ctx
                self.m._synced_read(sid, ctx, lambda fresh: self.maybe_auto_commit(fresh, ctx))
            except OgmemError:
                return  # deleted or re-owned meanwhile: nothing more to commit here

    def _build_archive(
        self,
        session_id: str,
        plan: CommitPlan,
        archive_id: str,
        timeout: float | None,
        dicts: list[dict[str, Any]],
    ) -> ArchiveEntry:
        previous = self.m.store.list_archives(session_id, limit=1)
        prev_overview = previous[0].overview if previous else ""
        prev_abstract = previous[0].abstract if previous else ""
        outcome = run_compression(
            self.m.compressor,
            self.m.fallback_compressor,
            [dict(d) for d in dicts],  # a compressor may keep or change what it is given
            prev_overview,
            prev_abstract,
            timeout=timeout,
            session_id=session_id,
        )
        metadata: dict[str, Any] = {
            "message_count": len(plan.messages),
            "compression": {
                "compressor": outcome.compressor,
                "fallback_used": outcome.fallback_used,
                "error": outcome.error,
            },
        }
        commits = previous[0].metadata.get("commit_number", 0) if previous else 0
        number = (commits if isinstance(commits, int) else 0) + 1
        metadata["commit_number"] = number
        if number <= 3 or number % QUALITY_SAMPLE_EVERY == 0:
            gil_pause()
            try:
                metadata["compression_quality"] = self.m.quality_evaluator.evaluate(
                    [dict(d) for d in dicts], outcome.overview, outcome.abstract
                )
            except Exception:  # metrics are advisory; never fail a commit over them
                logger.debug("quality evaluation failed", exc_info=True)
        return ArchiveEntry(
            archive_id=archive_id,
            session_id=session_id,
            overview=outcome.overview,
            abstract=outcome.abstract,
            first_seq=plan.first_seq,
            last_seq=plan.last_seq,
            message_count=len(plan.messages),
            token_count=plan.token_count,
            metadata=metadata,
        )

    def _embed(self, session_id: str, plan: CommitPlan) -> dict[str, list[float]] | None:
        """The plan's messages embedded in one batch (blank ones skipped), or None.

        An embedder failure does not fail the commit: those turns stay findable by words.
        """
        embedder = self.m.embedder
        if embedder is None:
            return None
        chosen = [m for m in plan.messages if m.content.strip()]
        if not chosen:
            return None
        try:
            vectors = embedder.embed_documents([m.content for m in chosen])
        except OgmemError as exc:
            logger.warning(
                "embedding the commit of session %s failed (recall by words only): %s", session_id, exc
            )
            return None
        return {m.id: v for m, v in zip(chosen, vectors, strict=True)}

    # -- merges -------------------------------------------------------------------

    def merge_once(self, session_id: str, epoch: str | None = None) -> bool:
        """Merge the oldest archives when there are too many; atomic, non-destructive."""
        store = self.m.store
        try:
            sources = plan_merge(store.list_archives(session_id), self.m.config)
            if not sources:
                return False
            merged = self.m.merger.merge(sources)
            if not merged.overview:
                return False
            entry = ArchiveEntry(
                archive_id=new_archive_id("merged_"),
                session_id=session_id,
                overview=merged.overview,
                abstract=merged.abstract,
                first_seq=merged.first_seq,
                last_seq=merged.last_seq,
                message_count=merged.message_count,
                token_count=sum(a.token_count for a in sources),
                # the newest source's time, not now: a merge must not become the "latest" (weakness 13)
                created_at=max(a.created_at for a in sources),
                metadata=dict(merged.metadata),
            )
            store.merge_archives(session_id, entry, [a.archive_id for a in sources], epoch=epoch)
        except ConcurrencyError:
            return False  # another writer merged first
        except Exception:
            logger.warning("archive merge of session %s failed", session_id, exc_info=True)
            return False
        buf = self.m._cache.peek(session_id)
        if buf is not None:
            with buf.lock:
                self._apply_archives(buf, epoch, entry, {a.archive_id for a in sources})
        self.m.invalidate_topic_slot(session_id, ARCHIVE_HISTORY_SLOT)
        return True

    def _apply_archives(
        self,
        buf: SessionBuffer,
        epoch: str | None,
        written: ArchiveEntry,
        merged: set[str] | frozenset[str] = frozenset(),
    ) -> bool:
        """After this process's archive write landed: the cached archives as a re-read would
        return them (caller holds buf.lock), instead of re-reading them all. False when the
        cache already holds ``written``: a whole window was read after the write, nothing to do.

        Every archive change bumps the session's archive version by one, so the head's
        version plus one is the store's exactly when no other change came in between; if one
        did, the next read finds another version and re-reads the whole window (the store
        decides, as always). Without the epoch the write was checked against, it re-reads too.
        """
        if any(a.archive_id == written.archive_id for a in buf.archives):
            return False
        head = buf.head
        if head is None or epoch is None or head.epoch != epoch or head.archive_version < 0:
            mark_stale(buf)
            return True
        try:
            # what a read returns: the metadata as its JSON round trip, newest first as listed
            metadata = json.loads(json.dumps(dict(written.metadata), ensure_ascii=False))
            archives = [a for a in buf.archives if a.archive_id not in merged]
            archives.append(replace(written, messages=(), metadata=metadata))
            archives.sort(key=lambda a: (a.last_seq, a.created_at, a.archive_id), reverse=True)
        except (TypeError, ValueError):  # unlike what this store returns: let it be read back
            mark_stale(buf)
            return True
        buf.archives = archives[: self.m.config.archive_max_count + 1]  # as read_window limits them
        buf.head = SessionHead(head.last_seq, head.archive_version + 1, head.epoch)
        return True
