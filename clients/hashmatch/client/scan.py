"""Scan files and folders: hash them in parallel worker processes, match them in batches.

Only hashes leave the machine: each file is one MatchBatch item holding its MD5, SHA-1,
SHA-256 and (images, with the ``[pdq]`` extra) its PDQ hash with quality — all 8 dihedral
variants with ``dihedral=True``. Item IDs are opaque counters, never paths.

    from hashmatch.client import Connection, MatchClient
    from hashmatch.client.scan import ScanOptions, scan

    with MatchClient(Connection.from_env()) as client:
        summary = scan(["/uploads"], client, ScanOptions(dihedral=True), on_result=print)
"""

from __future__ import annotations

import math
import multiprocessing
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from hashmatch.client.errors import HashmatchError
from hashmatch.client.hashing import pdq_available
from hashmatch.client.match_client import (
    DEFAULT_BATCH_ITEMS,
    MAX_BATCH_ITEMS,
    MAX_REQUEST_FRAMES,
    HashedFile,
    MatchClient,
    StrPath,
    batch_items,
    hash_for_matching,
    merge_results,
)
from hashmatch.client.progress import Progress
from hashmatch.client.results import FileResult, Verdict

EXIT_CLEAN, EXIT_MATCH, EXIT_ERROR = 0, 1, 2


OUTSIDE_ROOTS = "symlink leads outside the scanned folder"


def _inside(path: str, areas: Iterable[str]) -> bool:
    return any(path == a or path.startswith(a.rstrip(os.sep) + os.sep) for a in areas)


@dataclass(frozen=True)
class Found:
    """A path met while walking: a file to hash, or one that cannot be (``problem``)."""

    path: str
    size: int = 0
    problem: str | None = None


def walk(roots: Iterable[StrPath], *, exclude: Collection[tuple[int, int]] = ()) -> Iterator[Found]:
    """Every file under the roots, in sorted order; each directory is entered once.

    Symbolic links are followed while they lead inside one of the folders given: a link to a
    file or folder outside all of them (``..``, ``/``) is yielded with the problem
    ``OUTSIDE_ROOTS`` and not followed, so a scan never leaves the folders it was given. A
    directory already visited (a link loop, or the same folder given twice) is not walked
    again. ``exclude`` holds (st_dev, st_ino) pairs of files to leave out (the report being
    written). Directories that cannot be listed and roots that do not exist are yielded with
    a ``problem``.
    """
    names = [os.fspath(r) for r in roots]
    # Where links may lead: the folders given, as the system resolves them.
    areas = [os.path.realpath(n) for n in names if os.path.isdir(n)]
    visited: set[tuple[int, int]] = set()
    for name in names:
        try:
            st = os.stat(name)
        except OSError as exc:
            yield Found(name, problem=exc.strerror or str(exc))
            continue
        if not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) not in exclude:
                yield Found(name, st.st_size if stat.S_ISREG(st.st_mode) else 0)
            continue
        stack = [name]
        while stack:
            directory = stack.pop()
            try:
                st = os.stat(directory)
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    continue
                visited.add(key)
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                yield Found(directory, problem=f"cannot list folder: {exc.strerror or exc}")
                continue
            subdirs: list[str] = []
            for entry in entries:
                try:
                    if entry.is_symlink() and not _inside(os.path.realpath(entry.path), areas):
                        yield Found(entry.path, problem=OUTSIDE_ROOTS)
                        continue
                    if entry.is_dir():  # follows links; loops stop at `visited`
                        subdirs.append(entry.path)
                        continue
                    est = entry.stat()
                except OSError:
                    # A dangling link or a file that vanished: hashing reports why.
                    yield Found(entry.path)
                    continue
                if (est.st_dev, est.st_ino) in exclude:
                    continue
                yield Found(entry.path, est.st_size if stat.S_ISREG(est.st_mode) else 0)
            stack.extend(reversed(subdirs))


@dataclass(frozen=True)
class ScanOptions:
    dihedral: bool = False
    # Hashing processes; 0 or 1 hashes in this process. None: one per CPU.
    workers: int | None = None
    batch_size: int = DEFAULT_BATCH_ITEMS
    min_quality: int = 50
    # None: PDQ when the [pdq] extra is installed.
    pdq: bool | None = None
    timeout: float | None = None
    # Frames a second a video is hashed at (vPDQ, with the [video] extra).
    video_fps: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_ITEMS:
            raise ValueError(f"batch size must be 1-{MAX_BATCH_ITEMS}")
        if self.workers is not None and self.workers < 0:
            raise ValueError("workers must be >= 0")
        if not (math.isfinite(self.video_fps) and self.video_fps >= 0):
            raise ValueError(f"video fps must be a finite number, 0 or more, got {self.video_fps}")


@dataclass
class ScanSummary:
    files: int = 0
    bytes: int = 0
    matched: int = 0
    no_match: int = 0
    skipped: int = 0
    errors: int = 0
    pdq: bool = True
    workers: int = 1
    elapsed: float = 0.0
    # Summed over workers: CPU-side work, which runs in parallel.
    hash_seconds: float = 0.0
    # Wall time spent waiting for MatchBatch answers.
    match_seconds: float = 0.0
    aborted: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """1 when anything matched; else 2 when a file could not be checked; else 0."""
        if self.matched:
            return EXIT_MATCH
        if self.skipped or self.errors or self.aborted:
            return EXIT_ERROR
        return EXIT_CLEAN

    def add(self, result: FileResult) -> None:
        self.files += 1
        self.bytes += result.size or 0
        if result.verdict is Verdict.MATCH:
            self.matched += 1
        elif result.verdict is Verdict.NO_MATCH:
            self.no_match += 1
        elif result.verdict is Verdict.SKIPPED:
            self.skipped += 1
        else:
            self.errors += 1
        if result.reason and result.checked:
            key = (
                "low PDQ quality" if result.reason.startswith("low PDQ quality") else result.reason
            )
            if key.startswith("unreadable image"):
                key = "unreadable image"
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def text(self) -> str:
        mb = self.bytes / 1_000_000
        rate = self.files / self.elapsed if self.elapsed else 0.0
        lines = [
            f"scanned {self.files} files ({mb:.1f} MB) in {self.elapsed:.1f} s "
            f"({rate:.1f} files/s, {mb / self.elapsed if self.elapsed else 0:.1f} MB/s, "
            f"{self.workers} hashing process{'es' if self.workers != 1 else ''})",
            f"  {self.matched} MATCH, {self.no_match} NO_MATCH, {self.skipped} SKIPPED "
            f"(unreadable), {self.errors} ERROR",
            f"  time: hashing {self.hash_seconds:.1f} s (summed over processes), "
            f"matching {self.match_seconds:.2f} s",
        ]
        if not self.pdq:
            lines.append(
                "  PDQ off: images were matched by MD5/SHA-1/SHA-256 only "
                "(pip install 'hashmatch-client[pdq]' for near-duplicate matching)"
            )
        for reason, count in sorted(self.reasons.items()):
            lines.append(f"  no PDQ sent for {count} file(s): {reason}")
        if self.aborted:
            lines.append(f"  stopped early: {self.aborted}")
        return "\n".join(lines)


def _hash_task(
    path: str, pdq: bool, dihedral: bool, min_quality: int, video_fps: float
) -> tuple[HashedFile, float]:
    """Runs in a worker process. Never raises for a bad file: it comes back SKIPPED."""
    started = time.perf_counter()
    try:
        hashed = hash_for_matching(
            path, dihedral=dihedral, pdq=pdq, min_quality=min_quality, video_fps=video_fps
        )
    except Exception as exc:  # a decoder bug must cost one file, not the run
        hashed = HashedFile(
            path,
            skipped=FileResult(
                path, Verdict.SKIPPED, reason=f"hashing failed: {type(exc).__name__}: {exc}"
            ),
        )
    return hashed, time.perf_counter() - started


class _InlineExecutor(Executor):
    """Hashes in the calling process (workers 0 or 1): same pipeline, no pool."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        future: Future[object] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _pool(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # Not fork: the parent holds gRPC threads, and forking a process with threads is unsafe.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def scan(
    paths: Iterable[StrPath],
    client: MatchClient,
    options: ScanOptions | None = None,
    *,
    on_result: Callable[[FileResult], None] | None = None,
    progress: bool | None = None,
    exclude: Collection[tuple[int, int]] = (),
) -> ScanSummary:
    """Hashes and matches every file under ``paths``; ``on_result`` gets one result per file.

    Results arrive in walk order. ``progress`` draws a bar on standard error (None: when it
    is a terminal). Unreadable files come back SKIPPED. A MatchBatch call that still fails
    after its retries (server unreachable, bad token) stops the scan: its files and every
    file not yet checked come back ERROR with the reason, so each file still has a result.
    """
    opts = options or ScanOptions()
    started = time.monotonic()
    use_pdq = pdq_available() if opts.pdq is None else opts.pdq
    workers = opts.workers if opts.workers is not None else (os.cpu_count() or 1)
    summary = ScanSummary(pdq=use_pdq, workers=max(workers, 1))
    found = list(walk(paths, exclude=exclude))
    bar = Progress(len(found), sum(f.size for f in found), enabled=progress)

    def emit(results: Iterable[FileResult]) -> None:
        for r in results:
            summary.add(r)
            if on_result is not None:
                on_result(r)

    def flush(batch: list[HashedFile]) -> None:
        items = batch_items(batch)
        t0 = time.monotonic()
        try:
            answered = client.match_batch(items, timeout=opts.timeout) if items else []
            results = merge_results(batch, answered)
        except HashmatchError as exc:
            summary.aborted = str(exc).splitlines()[0]
            results = [
                f.skipped or FileResult(f.path, Verdict.ERROR, reason=str(exc).splitlines()[0])
                for f in batch
            ]
        summary.match_seconds += time.monotonic() - t0
        bar.advance(0, 0, sum(r.matched for r in results))
        emit(results)
        batch.clear()

    def task(executor: Executor, f: Found) -> Future[tuple[HashedFile, float]]:
        if f.problem is not None:
            done: Future[tuple[HashedFile, float]] = Future()
            done.set_result((HashedFile(f.path, skipped=_skipped(f.path, f.problem)), 0.0))
            return done
        return executor.submit(
            _hash_task, f.path, use_pdq, opts.dihedral, opts.min_quality, opts.video_fps
        )

    executor = _pool(workers)
    window = max(4 * workers, 16)
    pending: deque[tuple[Found, Future[tuple[HashedFile, float]], int]] = deque()
    queue = iter(found)
    batch: list[HashedFile] = []
    frames = 0  # video frames in `batch`: a call holds at most MAX_REQUEST_FRAMES
    try:
        for f in queue:
            pending.append((f, task(executor, f), 0))
            if len(pending) >= window:
                break
        while pending and summary.aborted is None:
            f, future, tries = pending.popleft()
            try:
                hashed, seconds = future.result()
            except BrokenProcessPool:
                # A worker died (killed, out of memory): start a new pool and hash again;
                # a file that breaks the pool twice is skipped.
                executor.shutdown(wait=False, cancel_futures=True)
                executor = _pool(workers)
                if tries >= 1:
                    hashed, seconds = (
                        HashedFile(f.path, skipped=_skipped(f.path, "hashing worker crashed")),
                        0.0,
                    )
                else:
                    pending.appendleft((f, task(executor, f), tries + 1))
                    pending = deque((g, task(executor, g), t) for g, _, t in pending)
                    continue
            summary.hash_seconds += seconds
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, task(executor, nxt), 0))
            bar.advance(1, f.size)
            if batch and frames + hashed.frames > MAX_REQUEST_FRAMES:
                flush(batch)
                frames = 0
            batch.append(hashed)
            frames += hashed.frames
            if len(batch) >= opts.batch_size:
                flush(batch)
                frames = 0
        if summary.aborted is None and batch:
            flush(batch)
        if summary.aborted is not None:
            # Everything not yet checked, so the report still has one record per file.
            reason = f"not checked: {summary.aborted}"
            emit(FileResult(f.path, Verdict.ERROR, reason=reason) for f, _, _ in pending)
            emit(FileResult(f.path, Verdict.ERROR, reason=reason) for f in queue)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
    summary.elapsed = time.monotonic() - started
    return summary


def _skipped(path: str, reason: str) -> FileResult:
    return FileResult(path, Verdict.SKIPPED, reason=reason)
