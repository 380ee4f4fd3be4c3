"""The model registry: plain data saying which weights files exist, where and what they are.

No torch, no network, no file access at import time: `bvmesh weights list` reads this and
answers instantly. Weights files are opaque bytes at this layer; loading and validating a
checkpoint's contents is `bvmesh.model`'s job.

To publish a new model version, add a `ModelEntry` below (see docs/weights.md): a new version
always gets a new file name, so an old cache never silently holds a different file under the
same name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

#: Folder of the files that ship inside the package (`bundled=True` entries).
BUNDLED_DIR: Path = Path(__file__).resolve().parent

#: Where release assets live. Not yet published: see docs/weights.md.
RELEASE_URL = "https://github.com/bvmesh/bvmesh/releases/download/{tag}/{file}"

#: The model used when the user names none. It ships inside the package: works with no network.
DEFAULT_MODEL = "bvmesh-acdc-v4"

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Model names double as folder names under the cache, so keep them filesystem-safe.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class ModelEntry:
    """One published weights file.

    Attributes:
        name: what users type (`--weights NAME`); unique in the registry.
        version: the model's version string (a new version gets a new name and file).
        file: the file name in the cache and, for bundled models, in the package folder.
        urls: mirrors tried in order; `file://` and `http(s)://` both work.
        sha256: lower-case hex SHA-256 of the file, or None while a bundled model is not yet
            pinned (then the file is hashed and reported, but not checked).
        size: the file's size in bytes, or None when not pinned; a download of another size
            is rejected before hashing.
        classes: output classes of the network, in channel order.
        training_data: what it was trained on (data set, subjects, phases).
        licence: SPDX identifier of the weights' licence (the code is MIT; weights inherit the
            terms of their training data).
        description: one line for `bvmesh weights list`.
        bundled: True when the file ships inside the package at `BUNDLED_DIR / file`.
    """

    name: str
    version: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    classes: tuple[str, ...]
    training_data: str
    licence: str
    description: str
    bundled: bool = False

    def __post_init__(self) -> None:
        # A malformed entry is a programming error in the registry; fail at import, loudly.
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"registry entry {self.name!r}: name must match "
                             f"{NAME_PATTERN.pattern}")
        if "/" in self.file or "\\" in self.file or self.file.startswith("."):
            raise ValueError(f"registry entry {self.name!r}: file {self.file!r} must be a plain "
                             "file name")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"registry entry {self.name!r}: sha256 must be 64 lower-case hex "
                             "digits (the output of `sha256sum FILE`)")
        if self.sha256 is None and not self.bundled:
            # A download without a hash to check against could be anything.
            raise ValueError(f"registry entry {self.name!r}: a downloadable model needs sha256")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"registry entry {self.name!r}: size must be positive bytes")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["urls"] = list(self.urls)
        d["classes"] = list(self.classes)
        return d


def _acdc(version: str, sha256: str, size: int, recipe: str, description: str,
          bundled: bool = False) -> ModelEntry:
    """An ACDC model: its name, file, release URL, classes and licence follow from the
    version (the licence from ACDC's terms); ``recipe`` says how it was trained."""
    name = f"bvmesh-acdc-v{version}"
    file = f"{name}.pt"
    return ModelEntry(
        name=name, version=version, file=file,
        urls=(RELEASE_URL.format(tag="v0.1.0", file=file),),
        sha256=sha256, size=size, classes=("lv_pool", "lv_myo", "rv_pool"),
        training_data="ACDC 2017 training set: 100 subjects, ED and ES frames, manual labels "
                      f"({recipe})",
        licence="CC-BY-NC-SA-4.0", description=description, bundled=bundled)


#: Every model bvmesh knows by name. Tests replace this dict (monkeypatch) with their own.
#: Each sha256 and size are `sha256sum FILE` and `stat -c %s FILE` (docs/weights.md).
REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        _acdc("4", "eed7a6b564a653b4708cdb91384185f214cdab2ca7c219c1af013e2fb854a0b1", 2534621,
              "9600 iterations, scanner-appearance augmentation; docs/model-card.md",
              "Default: init + propagation networks of the paper, trained on ACDC with "
              "scanner-appearance augmentation, twice as long as v3", bundled=True),
        # The default before v4 (bundled until then; in git at commit 1026d18).
        _acdc("3", "8de74bd8597471afe00abbfaaa8a1ebf364f099148f9ebac078198b42cb05686", 2534813,
              "4800 iterations, scanner-appearance augmentation; docs/model-card.md",
              "The vendor recipe at 4800 iterations; superseded by v4"),
        # The default before v3 (bundled until then; in git at commit 1f4b3fa).
        _acdc("2", "89b883e9df720b196c9552372eeb5698627dfbe28257ab92e137bea445a63e4f", 2537951,
              "2400 iterations, scanner-appearance augmentation; docs/model-card.md",
              "The vendor recipe at 2400 iterations; superseded by v3"),
        # The default before v2 (bundled until then; in git at commit b6ed1df).
        _acdc("1", "41943b075517b98d2ca6237f70a10e5718a5e5921e323612c99248a556a3bae9", 2378143,
              "2400 iterations, standard augmentation",
              "The first ACDC model (standard augmentation); superseded by v2"),
    )
}


def get(name: str, registry: dict[str, ModelEntry] | None = None) -> ModelEntry | None:
    """The entry called `name`, or None. `registry` defaults to the current `REGISTRY`."""
    return current(registry).get(name)


def current(registry: dict[str, ModelEntry] | None = None) -> dict[str, ModelEntry]:
    """`registry` if given, else the module's `REGISTRY` as it is now (so tests can patch it)."""
    return REGISTRY if registry is None else registry


def bundled_dir() -> Path:
    """The folder bundled files are looked up in, read at call time (so tests can patch it)."""
    return BUNDLED_DIR
