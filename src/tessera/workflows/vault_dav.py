"""The vault as a file system: the paths, folders and operations ``tessera vault mount``
serves over WebDAV (the protocol side is :mod:`tessera.server.dav`).

Names.  A vault name is the path without its leading ``/``: ``/ct/0042.dcm`` is the vault
file ``ct/0042.dcm``, which ``tessera vault get ct/0042.dcm`` restores too.  A path is
refused (:class:`InvalidPathError`, HTTP 400) when a segment is empty (``//``), ``.`` or
``..`` (no traversal: there is nothing to traverse to, and no name silently becomes
another), or holds a control character or a backslash; a name longer than the vault's
:data:`NAME_MAX` bytes or a segment longer than :data:`SEGMENT_MAX` bytes is refused with
:class:`NameTooLongError` (HTTP 414).

Folders.  The vault is flat; a folder is every name under its prefix.  An empty folder
is kept as a *folder marker*: an empty vault file whose name ends in ``/``
(``ct/archive/``), secret-shared and signed like any file, so the stores learn no folder
name either (``docs/formats.md``).  A name that is a file and the prefix of another
(``a`` and ``a/b``) shows as the folder; names a path cannot reach (``a//b``, ``../x``)
are not shown (``tessera vault ls`` lists them).

Reads hold the catalogue against the owner's signed record, as every vault read does, but
per file: a file the record commits to and the stores lost is listed, and reading it is
an error (:class:`~tessera.vault.VaultLostError`); the others are served.  Fewer than k
reachable stores refuse everything (StorageUnavailableError).

Writes go through the vault's own put and rm (atomic, journalled, signed with the vault
owner's key): a copy or move of a file writes it anew under the new name (the vault has no
rename: a name lives in a signed manifest bound to its fragments) and removes the old one
only after the new one is committed.
"""

from __future__ import annotations

import copy
import hashlib
import io
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from tessera import keys
from tessera.errors import ForbiddenError, UsageError
from tessera.vault import Manifest, Vault, VaultLostError
from tessera.vault.results import PutResult
from tessera.workflows.vault_dav_io import RestoreStream
from tessera.workflows.vault_dav_put import PutStream

__all__ = [
    "NAME_MAX",
    "SEGMENT_MAX",
    "FileNode",
    "FolderNode",
    "InvalidPathError",
    "NameTooLongError",
    "ReadOnlyError",
    "Tree",
    "VaultFiles",
    "check_listen",
    "is_loopback",
    "split_path",
]

#: The longest vault name, in bytes of UTF-8 (as ``tessera vault put --name``).
NAME_MAX = 1024
#: The longest path segment, in bytes of UTF-8 (what desktop file systems accept).
SEGMENT_MAX = 255
_FORBIDDEN = frozenset({"\\"})


class InvalidPathError(UsageError):
    """A path that names no vault file: an empty, ``.`` or ``..`` segment, a control
    character or a backslash."""

    code = "invalid_path"
    http_status = 400


class NameTooLongError(InvalidPathError):
    """A name over :data:`NAME_MAX` bytes, or a segment over :data:`SEGMENT_MAX`."""

    code = "name_too_long"
    http_status = 414


class ReadOnlyError(ForbiddenError):
    """A write to a mount that cannot or may not write."""

    code = "read_only"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, *, tls: bool) -> None:
    """Refuse to serve Basic authentication in the clear beyond loopback (UsageError)."""
    if not tls and not is_loopback(host):
        raise UsageError(
            f"serving on {host} needs --tls-cert and --tls-key (loopback only without): "
            "user names and tokens must never cross a network in the clear"
        )


def split_path(path: str) -> tuple[str, ...]:
    """The segments of a request path (``/a/b/`` -> ``("a", "b")``); refuses what no
    vault name can be (see the module docstring)."""
    if not path.startswith("/"):
        raise InvalidPathError("a path starts with '/'")
    bad = next((c for c in path if ord(c) < 32 or ord(c) == 127 or c in _FORBIDDEN), None)
    if bad is not None:
        what = "a backslash" if bad == "\\" else "a control character"
        raise InvalidPathError(f"the path holds {what}")
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    if not body:
        return ()
    segments = tuple(body.split("/"))
    for segment in segments:
        if segment in ("", ".", ".."):
            shown = "an empty segment ('//')" if not segment else f"a {segment!r} segment"
            raise InvalidPathError(f"the path holds {shown}: paths never traverse")
        if len(segment.encode()) > SEGMENT_MAX:
            raise NameTooLongError(f"a path segment is longer than {SEGMENT_MAX} bytes")
    if len("/".join(segments).encode()) + 1 > NAME_MAX:  # + 1: a folder's marker
        raise NameTooLongError(f"the name is longer than {NAME_MAX - 1} bytes")
    return segments


def _segments_of(name: str) -> tuple[tuple[str, ...], bool] | None:
    """A vault name's path segments and whether it is a folder marker; None for a name
    no path reaches."""
    marker = name.endswith("/")
    try:
        segments = split_path("/" + name)
    except InvalidPathError:
        return None
    if not segments or "/".join(segments) + ("/" if marker else "") != name:
        return None
    return segments, marker


def etag_of(manifest: Manifest) -> str:
    """An entity tag for one version of a file: a digest of its catalogue entry id (the
    id itself names the entry's files on the stores, so it is not shown)."""
    return hashlib.sha256(b"tessera-dav-etag|" + manifest.entry_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FileNode:
    """A file: its current version, or (``lost``) why it cannot be read."""

    segments: tuple[str, ...]
    manifest: Manifest | None
    lost: str | None = None

    @property
    def name(self) -> str:
        """The vault name."""
        return "/".join(self.segments)


@dataclass
class FolderNode:
    """A folder: its marker when it has one, and the newest date of what it holds."""

    segments: tuple[str, ...]
    marker: Manifest | None = None
    modified_ns: int = 0
    members: dict[str, str] = field(default_factory=dict)  # segment -> "file" | "folder"

    @property
    def marker_name(self) -> str:
        """The vault name of its marker."""
        return "/".join(self.segments) + "/"


class Tree:
    """One consistent view of the vault's names as files and folders."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, ...], FileNode] = {}
        self.folders: dict[tuple[str, ...], FolderNode] = {(): FolderNode(())}
        self.hidden: list[str] = []

    @classmethod
    def build(cls, current: dict[str, Manifest], lost: dict[str, str]) -> Tree:
        """The tree of ``current`` (name -> newest manifest) and ``lost`` (name -> why)."""
        tree = cls()
        files: dict[tuple[str, ...], FileNode] = {}
        for name in sorted({*current, *lost}):
            parsed = _segments_of(name)
            if parsed is None:
                tree.hidden.append(name)
                continue
            segments, marker = parsed
            manifest = current.get(name) if name not in lost else None
            if marker:
                tree._folder(segments).marker = manifest
                tree._dated(segments, manifest)
            else:
                files[segments] = FileNode(segments, manifest, lost.get(name))
                tree._folder(segments[:-1])
        for segments, node in files.items():
            if segments in tree.folders:  # a folder wins: its contents stay reachable
                tree.hidden.append(node.name)
                continue
            tree.files[segments] = node
            tree.folders[segments[:-1]].members[segments[-1]] = "file"
            tree._dated(segments[:-1], node.manifest)
        return tree

    def _dated(self, segments: tuple[str, ...], manifest: Manifest | None) -> None:
        """The folder ``segments`` and those above it are at least as new as ``manifest``."""
        for depth in range(len(segments) + 1):
            folder = self.folders[segments[:depth]]
            folder.modified_ns = max(folder.modified_ns, _ns(manifest))

    def _folder(self, segments: tuple[str, ...]) -> FolderNode:
        for depth in range(1, len(segments) + 1):
            here = segments[:depth]
            if here not in self.folders:
                self.folders[here] = FolderNode(here)
                self.folders[here[:-1]].members[here[-1]] = "folder"
        return self.folders[segments]

    def find(self, segments: tuple[str, ...]) -> FileNode | FolderNode | None:
        """The file or folder at ``segments``, or None."""
        return self.folders.get(segments) or self.files.get(segments)

    def names_under(self, segments: tuple[str, ...]) -> list[str]:
        """Every vault name in the folder ``segments`` and below (markers included),
        deepest first (so a folder's marker goes after its contents)."""
        depth = len(segments)
        names = [f.name for s, f in self.files.items() if s[:depth] == segments]
        names += [
            d.marker_name
            for s, d in self.folders.items()
            if s[:depth] == segments and d.marker is not None and s
        ]
        return sorted(names, key=lambda n: (-n.count("/"), n))


def _ns(manifest: Manifest | None) -> int:
    return manifest.created_ns if manifest is not None else 0


class _TreeLock:
    """Writes of single files share it (one writer per name, :class:`_NameLocks`);
    operations on many names (a folder's delete, a move) take it alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._shared)
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class _NameLocks:
    """One writer per vault name at a time (two puts of one name race in the vault)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._mutex:
            lock, users = self._held.get(name, (threading.Lock(), 0))
            self._held[name] = (lock, users + 1)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
            with self._mutex:
                users = self._held[name][1] - 1
                if users:
                    self._held[name] = (lock, users)
                else:
                    del self._held[name]


class VaultFiles:
    """The vault seen as files and folders, for one server process.

    ``vault`` reads (and, when it has the owner's signing key, writes); a write by the
    owner presenting their own key (a gateway user's key) passes it as ``signer``.  The
    tree is read from the stores at most every ``ttl_s`` seconds, and again after every
    write of this process.
    """

    def __init__(self, vault: Vault, *, scheme: str, spool_dir: Path, ttl_s: float = 1.0) -> None:
        self.vault = vault
        self.scheme = scheme
        self.spool_dir = spool_dir
        self.ttl_s = ttl_s
        self._tree: Tree | None = None
        self._read_at = 0.0
        self._generation = 0
        self._survey = threading.Lock()
        self._lock = _TreeLock()
        self._names = _NameLocks()

    # -- reading ------------------------------------------------------------------
    def tree(self) -> Tree:
        """The current tree (StorageUnavailableError with fewer than k stores)."""
        tree, generation = self._tree, self._generation
        if tree is not None and time.monotonic() - self._read_at < self.ttl_s:
            return tree
        with self._survey:
            if self._tree is not None and self._tree is not tree:
                return self._tree  # another thread read it meanwhile
            started = time.monotonic()
            found, listing = self.vault.survey()
            too_few = self.vault.too_few(listing)
            if too_few is not None:
                raise too_few
            current: dict[str, Manifest] = {}
            for entry in found.visible:
                m = entry.manifest
                if m is not None and (
                    m.name not in current or current[m.name].order_key() < m.order_key()
                ):
                    current[m.name] = m
            lost = {name: why for name, why in found.lost.values()}
            fresh = Tree.build(current, lost)
            if generation == self._generation:  # no write of ours since the survey began
                self._tree, self._read_at = fresh, started
            return fresh

    def invalidate(self) -> None:
        """Forget the tree (after a write)."""
        self._generation += 1
        self._tree = None

    def open(self, node: FileNode) -> RestoreStream:
        """A stream of ``node``'s bytes; raises now (before any byte) when the file is
        lost or its fragments cannot be opened and checked."""
        if node.manifest is None:
            raise VaultLostError(f"{node.name!r} is lost ({node.lost}); run 'tessera vault verify'")
        stream = RestoreStream(self.vault, node.manifest)
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        return stream

    # -- writing ------------------------------------------------------------------
    def writer(self, signer: keys.SigningKey | None) -> Vault:
        """The vault, signing with ``signer`` (else the key the mount was started
        with); ReadOnlyError when there is neither."""
        if signer is None:
            if self.vault.signer is None:
                raise ReadOnlyError("this mount cannot write (started without the owner's key)")
            return self.vault
        if signer.verify_key != self.vault.verifier:
            raise ReadOnlyError("only the vault's owner may write to it")
        writable = copy.copy(self.vault)  # shares the stores, journal and manifest cache
        writable.signer = signer
        return writable

    def put(
        self, segments: tuple[str, ...], size: int | None, signer: keys.SigningKey | None
    ) -> PutStream:
        """A stream that stores what is written to it as the file ``segments`` once
        closed (``size`` bytes; None: spooled encrypted, then stored).  Nothing changes
        unless all of it arrives."""
        vault = self.writer(signer)
        name = "/".join(segments)
        held = ExitStack()  # released when the stream ends, however it ends
        held.enter_context(self._lock.shared())
        held.enter_context(self._names.hold(name))

        def done() -> None:
            self.invalidate()
            held.close()

        try:
            return PutStream(
                vault, name, size, scheme=self.scheme, spool_dir=self.spool_dir, on_done=done
            )
        except BaseException:
            done()
            raise

    def make_folder(self, segments: tuple[str, ...], signer: keys.SigningKey | None) -> None:
        """Create the folder ``segments`` (its marker)."""
        vault = self.writer(signer)
        name = "/".join(segments) + "/"
        with self._lock.shared(), self._names.hold(name):
            try:
                vault.put(io.BytesIO(b""), 0, name, scheme=self.scheme)
            finally:
                self.invalidate()

    def create_empty(self, segments: tuple[str, ...], signer: keys.SigningKey | None) -> None:
        """Create an empty file (a LOCK on an unmapped path)."""
        vault = self.writer(signer)
        name = "/".join(segments)
        with self._lock.shared(), self._names.hold(name):
            try:
                vault.put(io.BytesIO(b""), 0, name, scheme=self.scheme, replace=True)
            finally:
                self.invalidate()

    def remove(
        self, segments: tuple[str, ...], signer: keys.SigningKey | None, *, keep_parent: bool
    ) -> int:
        """Remove the file or folder ``segments`` (everything under it); with
        ``keep_parent`` a folder left empty keeps existing (it gets a marker).  How many
        vault names went."""
        vault = self.writer(signer)
        with self._lock.alone():
            try:
                tree = self.tree()
                node = tree.find(segments)
                names = (
                    tree.names_under(segments)
                    if isinstance(node, FolderNode)
                    else [node.name]
                    if node is not None
                    else []
                )
                for name in names:
                    vault.rm(name)
                if keep_parent and names:
                    self._keep(vault, tree, segments[:-1], gone=set(names))
            finally:
                self.invalidate()
        return len(names)

    def _keep(self, vault: Vault, tree: Tree, parent: tuple[str, ...], gone: set[str]) -> None:
        """Give ``parent`` a marker if removing ``gone`` emptied it and it has none."""
        folder = tree.folders.get(parent)
        if not parent or folder is None or folder.marker is not None:
            return
        if all(name in gone for name in tree.names_under(parent)):
            vault.put(io.BytesIO(b""), 0, folder.marker_name, scheme=self.scheme, replace=True)

    def copy_file(
        self,
        source: FileNode,
        target: tuple[str, ...],
        signer: keys.SigningKey | None,
        *,
        move: bool,
        keep_parent: bool = True,
    ) -> PutResult:
        """Write ``source``'s bytes anew as ``target`` (replacing what is there, which
        stays readable until the copy is committed); with ``move``, then remove the
        source.  Streams: never holds the file in memory or on disk."""
        vault = self.writer(signer)
        if source.manifest is None:
            raise VaultLostError(f"{source.name!r} is lost ({source.lost})")
        manifest = source.manifest
        with self._lock.alone():
            try:
                stream = self.open(source)
                try:
                    result = vault.put(
                        cast(BinaryIO, stream),
                        manifest.size,
                        "/".join(target),
                        scheme=manifest.scheme,
                        replace=True,
                    )
                finally:
                    stream.close()
                if move:
                    self.invalidate()
                    tree = self.tree()  # as it is with the copy in place
                    vault.rm(source.name)
                    if keep_parent and source.segments[:-1] != target[:-1]:
                        self._keep(vault, tree, source.segments[:-1], {source.name})
            finally:
                self.invalidate()
        return result
