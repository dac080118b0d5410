"""Where videos live: local paths or object storage (s3://, gs://, az://), reached with pyarrow.fs.

Inputs and the LanceDB archive take the SAME ``storage_options`` (LanceDB / object_store key names)
with the same environment fallbacks, so whatever reaches the archive reaches the inputs. The driver
only lists (sizes and mtimes from the listing: no HEAD per object, no bytes read); a worker reads
each file once, where it decodes it (`readable_copy`). No ray/gradio/lancedb imports here.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import posixpath
import re
import stat as stat_mod
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from pyarrow import fs as pafs

from .errors import InputError, VideoError
from .sources import LIST_EXTENSIONS, VIDEO_EXTENSIONS

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ListedFile:
    path: str        # absolute local path, or a URI such as s3://bucket/dir/a.mp4
    size_bytes: int
    mtime_ns: int    # object storage: LastModified


class StorageError(Exception):
    """A store or input location that cannot be reached, authorised or read; message = one line
    naming the URI and the cause in plain words."""


def is_remote(uri: str) -> bool:
    """Any ``scheme://`` but file:// is object storage (unknown schemes fail in open_filesystem)."""
    match = _SCHEME.match(uri)
    return bool(match) and match.group(1).lower() != "file"


def parse_storage_options(pairs: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from the command line. Keys are lower-cased: object_store only knows
    lower-case names, and the same dict goes to lancedb.connect."""
    options: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"storage option {item!r}: expected KEY=VALUE, e.g. region=us-east-1")
        options[key.strip().lower()] = value.strip()
    return options


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, key). Not urlsplit: '#' and '?' are ordinary characters in object keys."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return scheme.lower(), bucket, key.strip("/")


def _uri(template: str, fs_path: str) -> str:
    """pyarrow's ``bucket/key`` as a URI written like ``template`` (its scheme; abfss://container@host)."""
    scheme, netloc, _ = _split(template)
    bucket, _, key = fs_path.strip("/").partition("/")
    return f"{scheme}://{netloc if '@' in netloc else bucket}" + (f"/{key}" if key else "")


def _local_path(name: str) -> str:
    """Absolute and normalised, but symlinks kept (resolving a loop would fail the listing)."""
    if name.lower().startswith("file://"):
        name = name[7:] if name[7:].startswith("/") else "/" + name[7:].partition("/")[2]
    return os.path.abspath(os.path.expanduser(name))


def _option(options: dict, keys: tuple[str, ...], env: tuple[str, ...] = ()) -> str | None:
    """First of ``keys`` in the options, else of ``env`` in the environment, as LanceDB falls back."""
    value = next((str(options[k]) for k in keys if options.get(k) not in (None, "")), None)
    return value or next((os.environ[name] for name in env if os.environ.get(name)), None)


@functools.lru_cache(maxsize=32)
def _s3_region(bucket: str) -> str:
    """Real AWS and no region configured: ask AWS where the bucket is, as LanceDB does."""
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return "us-east-1"


@functools.lru_cache(maxsize=32)
def _make_fs(kind: str, kwargs: tuple) -> pafs.FileSystem:
    """Cached per resolved settings (environment included), so a worker reuses its connections."""
    return {"s3": pafs.S3FileSystem, "gcs": pafs.GcsFileSystem, "azure": pafs.AzureFileSystem}[kind](**dict(kwargs))


def open_filesystem(uri: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow FileSystem, path inside it)`` for a local path, a file:// or an object-storage URI."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), _local_path(uri)
    opts = {str(k).lower(): v for k, v in (storage_options or {}).items()}
    scheme, bucket, key = _split(uri)
    if not bucket:
        raise StorageError(f"{uri}: no bucket or container named in the URI")
    if scheme in ("s3", "s3a"):
        endpoint = _option(opts, ("endpoint", "aws_endpoint", "endpoint_url", "aws_endpoint_url"),
                           ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"))
        allow_http = (_option(opts, ("allow_http", "aws_allow_http"), ("AWS_ALLOW_HTTP",)) or "").lower() in _TRUE
        if endpoint and endpoint.lower().startswith("http://") and not allow_http:
            # object_store (so LanceDB) refuses plain HTTP unless allowed; inputs behave the same.
            raise StorageError(f"{uri}: the endpoint {endpoint} is plain HTTP: add --storage-option "
                               "allow_http=true (or AWS_ALLOW_HTTP=true)")
        region = _option(opts, ("region", "aws_region"), ("AWS_REGION", "AWS_DEFAULT_REGION"))
        kind, kwargs = "s3", {
            "access_key": _option(opts, ("aws_access_key_id", "access_key_id"), ("AWS_ACCESS_KEY_ID",)),
            "secret_key": _option(opts, ("aws_secret_access_key", "secret_access_key"), ("AWS_SECRET_ACCESS_KEY",)),
            "session_token": _option(opts, ("aws_session_token", "session_token", "token"), ("AWS_SESSION_TOKEN",)),
            "region": region or ("us-east-1" if endpoint else _s3_region(bucket)),
            "endpoint_override": endpoint,  # pyarrow takes the scheme from an http(s):// endpoint
            "scheme": "http" if allow_http and endpoint and "://" not in endpoint else "https",
            "anonymous": (_option(opts, ("aws_skip_signature", "skip_signature")) or "").lower() in _TRUE}
    elif scheme in ("gs", "gcs"):
        account = _option(opts, ("google_service_account", "service_account", "google_service_account_path"),
                          ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH"))
        if account:  # pyarrow's GCS takes a key file only through this variable, not as a parameter
            os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = account
        # google-cloud-cpp retries for 15 minutes by default: a missing credential would look like a hang.
        kind, kwargs = "gcs", {"retry_time_limit": timedelta(seconds=float(opts.get("client_retry_timeout", 30)))}
    elif scheme in ("az", "azure", "abfs", "abfss"):
        bucket, _, host = bucket.partition("@")  # abfss://container@account.dfs.core.windows.net/...
        kind, kwargs = "azure", {
            "account_name": _option(opts, ("account_name", "azure_storage_account_name"),
                                    ("AZURE_STORAGE_ACCOUNT_NAME",)) or host.split(".")[0],
            "account_key": _option(opts, ("account_key", "azure_storage_account_key", "access_key"),
                                   ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY"))}
        if not kwargs["account_name"]:
            raise StorageError(f"{uri}: no Azure storage account: add --storage-option account_name=...")
    else:
        raise StorageError(f"{uri}: unsupported storage scheme {scheme}:// (use s3://, gs:// or az://)")
    kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if v not in (None, False)))
    return _make_fs(kind, kwargs), f"{bucket}/{key}" if key else bucket


def _list_entries(text: str, base: str) -> list[str]:
    """A list file's entries: one path or URI a line, ``#`` comments, relative to the list's folder."""
    entries = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if is_remote(line):
            entries.append(_uri(line, "/".join(_split(line)[1:])))
        elif is_remote(base) and not line.lower().startswith(("/", "~", "file://")):
            key = posixpath.normpath(posixpath.join("/" + _split(base)[2], line)).lstrip("/")
            entries.append(_uri(base, f"{_split(base)[1]}/{key}"))
        else:
            local = Path(_local_path(line) if line.lower().startswith("file://") else line).expanduser()
            entries.append(_local_path(str(local if local.is_absolute() else Path(base) / local)))
    return entries


def _call(uri: str, options: dict | None, fn, worker: bool = False):
    """``fn(filesystem, fs_path)``, its errors turned into what that caller's user needs: in the
    driver InputError / StorageError (the job stops: fix the input or the store); in a worker
    VideoError (the job records the file as failed and carries on)."""
    try:
        return fn(*open_filesystem(uri, options))
    except (OSError, StorageError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        if worker:
            reason = explain_storage_error(uri, exc).removeprefix(f"{uri}: ")
            reason = reason.replace("cannot reach the store", "object storage unreachable", 1)
            raise VideoError(uri, "read", "object does not exist" if missing else reason) from exc
        raise (InputError(f"{uri}: no such file or folder") if missing
               else StorageError(explain_storage_error(uri, exc))) from exc


def _listed(uri: str, infos) -> list[ListedFile]:
    return [ListedFile(_uri(uri, i.path), int(i.size or 0), int(i.mtime_ns or 0)) for i in infos if i.is_file]


def _list_remote(item: str, filesystem: pafs.FileSystem, fs_path: str) -> tuple[list[ListedFile], list[str]]:
    """One remote input: a prefix (one recursive listing), a list file or a single object."""
    info = filesystem.get_file_info(fs_path)
    if info.type == pafs.FileType.Directory:
        infos = filesystem.get_file_info(pafs.FileSelector(fs_path, recursive=True))
        return [f for f in _listed(item, infos) if posixpath.splitext(f.path)[1].lower() in VIDEO_EXTENSIONS], []
    if info.is_file and posixpath.splitext(fs_path)[1].lower() in LIST_EXTENSIONS:
        with filesystem.open_input_stream(fs_path) as stream:
            return [], _list_entries(stream.read().decode("utf-8", errors="replace"), item.rsplit("/", 1)[0])
    if info.is_file:
        return _listed(item, [info]), []
    bucket = fs_path.split("/")[0]  # S3 reports a missing bucket as a missing key: tell them apart
    if bucket != fs_path and filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise StorageError(f"{item}: no such bucket")
    raise InputError(f"{item}: no such file or folder")


def _local_entry(path: str) -> ListedFile:
    """Stat through symlinks; a dangling link or a loop gets size 0 / mtime 0, not an error: the job
    records the failure under this path when a worker reads it."""
    try:
        st = os.stat(path)
        return ListedFile(path, st.st_size, st.st_mtime_ns)
    except OSError:
        return ListedFile(path, 0, 0)


def list_inputs(inputs: list[str], storage_options: dict | None = None) -> list[ListedFile]:
    """Folders/prefixes (recursive, by video extension), single files and list files, local or
    remote, as sorted unique entries. As `sources.discover`, but symlinks are not resolved and
    sizes/mtimes come from the listing (never from reading the files)."""
    found: dict[str, ListedFile] = {}
    named: list[str] = []  # paths found in local folders or named in list files
    for item in inputs:
        path = Path(item).expanduser()
        if is_remote(item):
            listed, entries = _call(item, storage_options, lambda f, p, item=item: _list_remote(item, f, p))
            found.update((f.path, f) for f in listed if f.path not in found)
            named += entries
        elif path.is_dir():
            named += [_local_path(str(p)) for p in sorted(path.rglob("*"))
                      if p.suffix.lower() in VIDEO_EXTENSIONS and (p.is_file() or p.is_symlink())]
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            named += _list_entries(path.read_text(encoding="utf-8", errors="replace"), str(path.parent))
        elif path.exists() or path.suffix.lower() in VIDEO_EXTENSIONS:
            named.append(_local_path(item))
        else:
            raise InputError(f"{item}: no such file or folder")
    remote_named = {name for name in named if is_remote(name)}
    for name in named:
        if name not in remote_named and name not in found:
            found[name] = _local_entry(name)
    # Objects named in list files are sized by listing each parent prefix once (no HEAD per object).
    for prefix in sorted({uri.rsplit("/", 1)[0] for uri in remote_named}):
        infos = _call(prefix, storage_options,
                      lambda f, p: f.get_file_info(pafs.FileSelector(p, allow_not_found=True)))
        found.update((f.path, f) for f in _listed(prefix, infos) if f.path in remote_named and f.path not in found)
    for uri in remote_named:  # named but absent: size 0, and the job records the failure
        found.setdefault(uri, ListedFile(uri, 0, 0))
    return sorted(found.values(), key=lambda f: f.path)


def _local_reason(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link" if os.path.islink(path) else "file does not exist"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return "symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc)).lower()


def stat_input(path: str, storage_options: dict | None = None) -> ListedFile:
    """Size and mtime of one input (a HEAD on object storage); VideoError when it cannot be read."""
    if not is_remote(path):
        local = _local_path(path)
        try:
            st = os.stat(local)
        except OSError as exc:
            raise VideoError(path, "read", _local_reason(local, exc)) from exc
        return ListedFile(local, st.st_size, st.st_mtime_ns)
    info = _call(path, storage_options, lambda f, p: f.get_file_info(p), worker=True)
    if not info.is_file:
        raise VideoError(path, "read", "object does not exist" if info.type == pafs.FileType.NotFound
                         else "not a regular file")
    return _listed(path, [info])[0]


def content_hash_of(source, sink=None) -> str:
    """blake2b-128 hex digest of a path or binary stream (the id `sources.content_hash` gives), also
    writing the bytes to ``sink``, so that a remote object is saved and hashed in one pass."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return content_hash_of(fh, sink)
    digest = hashlib.blake2b(digest_size=16)
    while block := source.read(1 << 20):
        digest.update(block)
        if sink is not None:
            sink.write(block)
    return digest.hexdigest()


@contextlib.contextmanager
def readable_copy(path: str, storage_options: dict | None = None,
                  scratch_dir: str | None = None) -> Iterator[tuple[str, str]]:
    """``(local path, content hash)`` for a worker to decode. A local file is hashed in place; a
    remote object is streamed into a temporary file in ``scratch_dir`` while hashing (decoders need a
    seekable local file), and the copy is deleted when the block ends, however it ends."""
    if not is_remote(path):
        local = _local_path(path)
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
            with os.fdopen(os.open(local, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
                if not stat_mod.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise VideoError(path, "read", "not a regular file")
                digest = content_hash_of(fh)
        except OSError as exc:
            raise VideoError(path, "read", _local_reason(local, exc)) from exc
        yield local, digest
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix="vidsift-", suffix=posixpath.splitext(path)[1][:16], dir=scratch_dir)
    except OSError as exc:
        raise VideoError(path, "read", f"cannot write a temporary copy in {scratch_dir or tempfile.gettempdir()}: "
                         f"{(exc.strerror or str(exc)).lower()}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            def copy(filesystem, fs_path):
                with filesystem.open_input_stream(fs_path) as stream:
                    return content_hash_of(stream, out)
            digest = _call(path, storage_options, copy, worker=True)
        yield tmp, digest
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# Markers in pyarrow (AWS SDK, curl) and object_store (reqwest, S3 XML) messages -> a plain cause.
_ENDPOINT = re.compile(r"uri: Some\(https?://([^/\s)]+)|Failed to connect to (\S+?) after|Could not resolve "
                       r"host: (\S+)|tcp connect error\", ([^,\s)]+)")
_CAUSES = (
    (r"Could not create a OAuth2 access token|Missing credentials|NoCredentialProviders|Unable to locate credentials"
     r"|Failed to get AWS credentials|FailedToLoadToken|no credentials",
     "no usable credentials (check the credentials: {hint})"),
    (r"Connection refused|curlCode: 7,|Could not connect to server", "cannot reach the store{at}: connection refused"),
    (r"dns error|Could not resolve host|failed to lookup address|Name or service not known",
     "cannot reach the store{at}: host name not found (DNS)"),
    (r"curlCode: 28|Timeout was reached|TimedOut|timed out|kind: Timeout", "cannot reach the store{at}: timed out"),
    (r"NoSuchBucket|NO_SUCH_BUCKET|bucket does not exist|ContainerNotFound", "no such bucket"),
    (r"AccessDenied|ACCESS_DENIED|InvalidAccessKeyId|INVALID_ACCESS_KEY_ID|SignatureDoesNotMatch|SIGNATURE_DOES_NOT"
     r"|InvalidClientTokenId|ExpiredToken|status: 403|Forbidden|PERMISSION_DENIED|AuthenticationFailed|"
     r"AuthorizationFailure", "access denied (check the credentials: {hint})"),
    (r"BadScheme", "the endpoint is plain HTTP: add --storage-option allow_http=true (or AWS_ALLOW_HTTP=true)"),
    (r"NoSuchKey|NO_SUCH_KEY", "no such file or object"),
)
_HINTS = {"s3": "AWS_ACCESS_KEY_ID / --storage-option aws_access_key_id=...",
          "gs": "GOOGLE_APPLICATION_CREDENTIALS / --storage-option google_service_account=...",
          "az": "AZURE_STORAGE_ACCOUNT_KEY / --storage-option account_key=..."}
_FAMILY = {"gcs": "gs", "azure": "az", "abfs": "az", "abfss": "az"}


def explain_storage_error(uri: str, exc: BaseException) -> str:
    """``"<uri>: <cause>"`` on one line for errors from pyarrow.fs or LanceDB, whose Rust errors are
    long debug dumps: a user needs the cause and what to check, not the dump."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, StorageError) and text.startswith(f"{uri}: "):
        return text.splitlines()[0]
    found = _ENDPOINT.search(text)
    at = f" at {next(g for g in found.groups() if g)}" if found else ""
    scheme = _split(uri)[0] if is_remote(uri) else "s3"
    hint = _HINTS.get(_FAMILY.get(scheme, scheme), _HINTS["s3"])
    for pattern, cause in _CAUSES:
        if re.search(pattern, text):
            return f"{uri}: " + cause.format(at=at, hint=hint)
    if isinstance(exc, FileNotFoundError):
        return f"{uri}: no such file or object"
    message = re.search(r"<Message>(.*?)</Message>", text)  # an S3 error body inside a dump
    line = message.group(1) if message else next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    line = line.split(" { ")[0].removeprefix(f"{uri}: ")  # Rust debug structures start with " { "
    return f"{uri}: {line[:197] + '...' if len(line) > 200 else line}"
