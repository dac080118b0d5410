"""How `vidsift app` serves one database (``AppConfig``), checked when it is made: the CLI's
`vidsift app` flags, the tests and `vidsift demo` build one, the service and the page read it.
No Gradio here: the config is needed before the web layer is imported."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vidsift.app.paths import absolute
from vidsift.models.spec import ModelSpec
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.sources import VIDEO_EXTENSIONS

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class AppConfig:
    """How `vidsift app` serves one database.

    ``work_dir`` holds the managed uploads (``uploads/``) and Gradio's private temp folder
    (``gradio-tmp/``); by default it is the DB's sibling folder ``<db>-app`` (``./vidsift-app`` for
    remote URIs). ``temp_dir`` overrides the temp folder alone (it is process-wide: Gradio reads
    ``GRADIO_TEMP_DIR``).
    """

    db: str = "vidsift.lance"
    spec: ModelSpec | None = None  # None: the archive's default model (``app.serving``), ViT-B-32 for a new one
    allow_dirs: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    max_upload_mb: float = 500.0
    upload_exts: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS))
    concurrency: int = 4
    queue_size: int = 64
    max_k: int = 100
    index: IndexConfig = field(default_factory=IndexConfig)
    work_dir: str | None = None
    temp_dir: str | None = None

    def __post_init__(self):
        self.allow_dirs = tuple(str(absolute(d)) for d in self.allow_dirs)
        for folder in self.allow_dirs:
            if not os.path.isdir(folder):
                raise InputError(f"--allow-dir {folder}: no such folder")
        self.upload_exts = tuple(sorted({e.lower() if e.startswith(".") else "." + e.lower()
                                         for e in self.upload_exts}))
        if not self.upload_exts:
            raise InputError("at least one upload extension is needed")
        if not 0 < float(self.max_upload_mb) <= 1_000_000:
            raise InputError(f"--max-upload-mb must be > 0, got {self.max_upload_mb!r}")
        if not 1 <= int(self.concurrency) <= 64:
            raise InputError(f"concurrency must be between 1 and 64, got {self.concurrency!r}")
        if self.port is not None and not 0 < int(self.port) < 65536:
            raise InputError(f"--port must be between 1 and 65535, got {self.port!r}")

    @property
    def work_path(self) -> Path:
        if self.work_dir:
            return absolute(self.work_dir)
        if "://" in self.db:
            return absolute("vidsift-app")
        db = absolute(self.db)
        stem = db.name[: -len(".lance")] if db.name.endswith(".lance") else db.name
        return db.parent / f"{stem}-app"

    @property
    def uploads_dir(self) -> Path:
        return self.work_path / "uploads"

    @property
    def temp_path(self) -> Path:
        return absolute(self.temp_dir) if self.temp_dir else self.work_path / "gradio-tmp"

    @property
    def max_upload_bytes(self) -> int:
        return int(float(self.max_upload_mb) * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")
