"""The vault as a wsgidav resource provider: folders and files of
:class:`tessera.workflows.vault_dav.VaultFiles`.

One tree per request (``environ``), read again after each write.  Every failure of the
vault becomes a DAVError with the status of :func:`status_of` (the TesseraError is kept
in ``environ`` for the request's audit event); a lost file or one whose fragments cannot
be opened fails before its first byte.  A MOVE or COPY of a file onto an existing file
replaces it atomically (the old version stays readable until the new one is committed);
other copies and moves go resource by resource, as RFC 4918 describes.
"""

from __future__ import annotations

from typing import Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_ERROR,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from tessera.errors import (
    AuthenticationError,
    BackendError,
    InvalidShareError,
    NotFoundError,
    PolicyError,
    RecoveryError,
    TesseraError,
    TooManyAttemptsError,
    UsageError,
)
from tessera.workflows.vault_dav import (
    FileNode,
    FolderNode,
    Tree,
    VaultFiles,
    etag_of,
    split_path,
)
from tessera.workflows.vault_dav_put import PutStream, UploadInterruptedError

__all__ = ["ERROR_KEY", "SIGNER_KEY", "VaultProvider", "dav_error", "status_of"]

#: environ keys: the TesseraError a request ended with; the key its writes sign with.
ERROR_KEY = "tessera.dav.error"
SIGNER_KEY = "tessera.dav.signer"
_TREE_KEY = "tessera.dav.tree"


def status_of(error: TesseraError) -> int:
    """The HTTP status a vault failure is answered with."""
    if isinstance(error, TooManyAttemptsError):
        return 429
    if isinstance(error, AuthenticationError):
        return 401
    if isinstance(error, PolicyError):
        return int(HTTP_FORBIDDEN)
    if isinstance(error, NotFoundError):
        return int(HTTP_NOT_FOUND)
    if isinstance(error, UsageError):  # 400, or its own: 405, 413, 414, 501
        return error.http_status if 400 <= error.http_status < 600 else int(HTTP_BAD_REQUEST)
    if isinstance(error, BackendError):  # stores unreachable: may pass
        return int(HTTP_SERVICE_UNAVAILABLE)
    if isinstance(error, (RecoveryError, InvalidShareError)):  # lost or foreign data
        return int(HTTP_INTERNAL_ERROR)
    return int(HTTP_INTERNAL_ERROR)


def dav_error(environ: dict[str, Any], error: TesseraError) -> DAVError:
    """``error`` as a DAVError (its one-line message as the context), noted for the audit."""
    environ.setdefault(ERROR_KEY, error)
    return DAVError(status_of(error), context_info=str(error))


def _segments(path: str, environ: dict[str, Any]) -> tuple[str, ...]:
    """The vault segments of a path wsgidav made (it joins a collection's path ending in
    '/' with '/member': the request's own paths were checked for '//' already)."""
    while "//" in path:
        path = path.replace("//", "/")
    try:
        return split_path(path)
    except TesseraError as exc:
        raise dav_error(environ, exc) from None


class _Resource:
    """What files and folders share: the vault, the request, the tree."""

    provider: VaultProvider
    environ: dict[str, Any]
    path: str

    @property
    def files(self) -> VaultFiles:
        return self.provider.files

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.path, self.environ)

    def _signer(self) -> Any:
        return self.environ.get(SIGNER_KEY)

    def _changed(self) -> None:
        self.environ.pop(_TREE_KEY, None)

    def _is_request_path(self) -> bool:
        request = self.environ.get("PATH_INFO", "")
        return str(request).rstrip("/") == self.path.rstrip("/")

    def _props(self, dest_path: str, *, move: bool) -> None:
        """Carry the dead properties over to ``dest_path`` (a move takes them along)."""
        manager = self.provider.prop_manager
        if manager is None:
            return
        source = self.get_ref_url()  # type: ignore[attr-defined]
        dest = self.provider.resource(dest_path, self.environ)
        if dest is None:
            return
        target = dest.get_ref_url()
        manager.remove_properties(target, self.environ)
        if move:
            manager.move_properties(source, target, with_children=True, environ=self.environ)
        else:
            manager.copy_properties(source, target, self.environ)


class FolderResource(_Resource, DAVCollection):  # type: ignore[misc]
    """A folder of the vault (the root, a marker's folder, or a prefix of file names)."""

    def __init__(
        self, provider: VaultProvider, path: str, environ: dict[str, Any], node: FolderNode
    ):
        DAVCollection.__init__(self, path, environ)
        self.provider = provider
        self.node = node

    def get_display_name(self) -> str:
        return self.node.segments[-1] if self.node.segments else ""

    def get_creation_date(self) -> float | None:
        marker = self.node.marker
        return marker.created_ns / 1e9 if marker is not None else None

    def get_last_modified(self) -> float | None:
        return self.node.modified_ns / 1e9 if self.node.modified_ns else None

    def get_member_names(self) -> list[str]:
        return sorted(self.node.members)

    def get_member(self, name: str) -> Any:
        return self.provider.resource(util.join_uri(self.path, name), self.environ)

    def create_empty_resource(self, name: str) -> Any:
        path = util.join_uri(self.path, name)
        segments = _segments(path, self.environ)
        if self.environ.get("REQUEST_METHOD") == "PUT":  # stored only once the body is in
            return FileResource(self.provider, path, self.environ, None)
        try:
            self.files.create_empty(segments, self._signer())
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()
        return self.provider.resource(path, self.environ)

    def create_collection(self, name: str) -> None:
        segments = _segments(util.join_uri(self.path, name), self.environ)
        try:
            self.files.make_folder(segments, self._signer())
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()

    def support_recursive_delete(self) -> bool:
        return True

    def delete(self) -> None:
        if not self.node.segments:
            raise DAVError(HTTP_FORBIDDEN, context_info="the vault's root cannot be deleted")
        try:
            self.files.remove(
                self.node.segments, self._signer(), keep_parent=self._is_request_path()
            )
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        segments = _segments(dest_path, self.environ)
        found = self.provider.tree(self.environ).find(segments)
        if isinstance(found, FolderNode):
            return  # copying into an existing folder: its members follow one by one
        try:
            self.files.make_folder(segments, self._signer())
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()
        self._props(dest_path, move=False)

    def support_recursive_move(self, dest_path: str) -> bool:
        return False


class FileResource(_Resource, DAVNonCollection):  # type: ignore[misc]
    """A file of the vault (``node`` None: one a PUT is creating)."""

    def __init__(
        self,
        provider: VaultProvider,
        path: str,
        environ: dict[str, Any],
        node: FileNode | None,
    ):
        DAVNonCollection.__init__(self, path, environ)
        self.provider = provider
        self.node = node
        self._upload: PutStream | None = None

    @property
    def _manifest(self) -> Any:
        return self.node.manifest if self.node is not None else None

    def get_content_length(self) -> int | None:
        m = self._manifest
        return m.size if m is not None else None

    def get_content_type(self) -> str:
        return str(util.guess_mime_type(self.path))

    def get_creation_date(self) -> float | None:
        m = self._manifest
        return m.created_ns / 1e9 if m is not None else None

    def get_last_modified(self) -> float | None:
        return self.get_creation_date()  # every change writes a new version

    def get_display_name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def get_etag(self) -> str | None:
        m = self._manifest
        return etag_of(m) if m is not None else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def support_content_length(self) -> bool:
        return self._manifest is not None

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[Any]) -> None:
        """A lost file answers HEAD (and GET) with its error, not with a success."""
        if self.node is not None and self.node.manifest is None:
            self.get_content()

    def get_content(self) -> Any:
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        try:
            return self.files.open(self.node)
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None

    # -- PUT ------------------------------------------------------------------------
    def begin_write(self, *, content_type: str | None = None) -> Any:
        size = _declared_size(self.environ)
        try:
            self._upload = self.files.put(self.segments, size, self._signer())
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        return _Upload(self._upload, self.environ)

    def end_write(self, *, with_errors: bool) -> None:
        upload, self._upload = self._upload, None
        if upload is not None and with_errors:
            upload.abort()
        self._changed()
        if not with_errors:  # the new version's date and entity tag
            found = self.provider.tree(self.environ).find(self.segments)
            self.node = found if isinstance(found, FileNode) else self.node

    # -- DELETE, COPY, MOVE ---------------------------------------------------------
    def delete(self) -> None:
        try:
            self.files.remove(self.segments, self._signer(), keep_parent=self._is_request_path())
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def _copy(self, dest_path: str, *, move: bool) -> None:
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        target = _segments(dest_path, self.environ)
        try:
            self.files.copy_file(self.node, target, self._signer(), move=move)
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        finally:
            self._changed()
        self._props(dest_path, move=move)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        # A move removes the source afterwards through delete() (wsgidav's order).
        self._copy(dest_path, move=False)

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    def _onto_file(self, dest_path: str) -> bool:
        target = _segments(dest_path, self.environ)
        return isinstance(self.provider.tree(self.environ).find(target), FileNode)

    def handle_move(self, dest_path: str) -> bool:
        if not self._onto_file(dest_path):
            return False
        self._copy(dest_path, move=True)  # replaced atomically, then the source removed
        self.remove_all_locks(recursive=False)
        return True

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        if not self._onto_file(dest_path):
            return False
        self._copy(dest_path, move=False)
        return True


class _Upload:
    """The PUT body's sink: vault failures become DAVErrors with their status."""

    def __init__(self, stream: PutStream, environ: dict[str, Any]) -> None:
        self.stream = stream
        self.environ = environ

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None

    def close(self) -> None:
        try:
            self.stream.close()
        except TesseraError as exc:
            raise dav_error(self.environ, exc) from None
        self.environ["tessera.dav.bytes_in"] = self.stream.received


def _declared_size(environ: dict[str, Any]) -> int | None:
    """The body's size: Content-Length, else X-Expected-Entity-Length (macOS sends it
    with chunked bodies), else None (spooled)."""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    for key in (() if chunked else ("CONTENT_LENGTH",)) + ("HTTP_X_EXPECTED_ENTITY_LENGTH",):
        text = str(environ.get(key, "")).strip()
        if text:
            if not text.isdigit():
                raise dav_error(environ, UploadInterruptedError(f"invalid {key} header"))
            return int(text)
    return None


class VaultProvider(DAVProvider):  # type: ignore[misc]
    """The vault's files and folders as one share."""

    def __init__(self, files: VaultFiles, *, read_only: bool) -> None:
        super().__init__()
        self.files = files
        self.readonly = read_only

    def is_readonly(self) -> bool:
        return self.readonly

    def tree(self, environ: dict[str, Any]) -> Tree:
        """The request's tree (read once per request, again after a write)."""
        tree = environ.get(_TREE_KEY)
        if tree is None:
            try:
                tree = self.files.tree()
            except TesseraError as exc:
                raise dav_error(environ, exc) from None
            environ[_TREE_KEY] = tree
        return tree

    def resource(self, path: str, environ: dict[str, Any]) -> Any:
        """The file or folder at ``path`` (None when there is none)."""
        node = self.tree(environ).find(_segments(path, environ))
        if isinstance(node, FolderNode):
            return FolderResource(self, path, environ, node)
        if isinstance(node, FileNode):
            return FileResource(self, path, environ, node)
        return None

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        self._count_get_resource_inst += 1
        return self.resource(path, environ)
