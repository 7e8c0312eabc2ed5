"""The official downloads ``pnp-ovss prepare`` reads: where to find them, how to check them, how to read members.

A download is found in ``--downloads DIR`` either as the archive as distributed (a zip or an uncompressed tar,
under one of its official names) or as the folder it was extracted to (``DIR`` itself or ``DIR/<archive
name without extension>``), recognised by a member that it must contain. Member names are the archive's
(``VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg``), whichever form is found.

Sources are picklable (a worker process re-opens the archive); reading a tar member seeks straight to its data.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError


class PrepareError(DatasetError):
    """A download is missing, truncated, or not the expected file."""


@dataclass(frozen=True)
class Download:
    key: str
    title: str
    #: the archive's official file names (the first is the one to download)
    file_names: tuple[str, ...]
    url: str
    #: a member every copy of this download has (glob allowed), used to recognise an extracted folder
    probe: str
    #: published checksum and size, where there is one
    md5: str | None = None
    size: int | None = None
    #: a plain file (not an archive), e.g. the Context json
    plain_file: bool = False
    #: the page where an account is made, for a download served only after a login (None: a plain URL)
    login: str | None = None


DOWNLOADS: dict[str, Download] = {d.key: d for d in (
    Download("voc2012", "PASCAL VOC 2012 trainval", ("VOCtrainval_11-May-2012.tar",),
             "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
             probe="VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", md5="6cd6e144f989b92b3379bac3b3de84fd"),
    Download("voc2010", "PASCAL VOC 2010 trainval", ("VOCtrainval_03-May-2010.tar",),
             "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
             probe="VOCdevkit/VOC2010/JPEGImages/*.jpg", md5="da459979d0c395079b5c75ee67908abb"),
    Download("context_json", "PASCAL Context annotations (trainval_merged.json)", ("trainval_merged.json",),
             "https://codalabuser.blob.core.windows.net/public/trainval_merged.json",
             probe="trainval_merged.json", plain_file=True),
    Download("ade20k", "ADE20K SceneParsing (ADEChallengeData2016)", ("ADEChallengeData2016.zip",),
             "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
             probe="ADEChallengeData2016/images/validation/*.jpg", md5="7328b3957e407ddae1d3cbf487f149ef"),
    Download("coco_val2017", "COCO 2017 val images", ("val2017.zip",),
             "http://images.cocodataset.org/zips/val2017.zip",
             probe="val2017/*.jpg", md5="442b8da7639aecaf257c1dceb8ba8c80", size=815585330),
    Download("coco_stuffthingmaps", "COCO-Stuff stuff+thing maps", ("stuffthingmaps_trainval2017.zip",),
             "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
             probe="val2017/*.png"),
    Download("coco_annotations", "COCO 2017 annotations", ("annotations_trainval2017.zip",),
             "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
             probe="annotations/instances_val2017.json", md5="f4bbac642086de4f52a3fdda2de5fa2c", size=252907541),
    Download("cityscapes_images", "Cityscapes leftImg8bit (trainvaltest)", ("leftImg8bit_trainvaltest.zip",),
             "https://www.cityscapes-dataset.com/file-handling/?packageID=3",
             probe="leftImg8bit/val/*", md5="0a6e97e94b616a514066c9e2adb0c97f",
             login="https://www.cityscapes-dataset.com/register/"),
    Download("cityscapes_gtfine", "Cityscapes gtFine (trainvaltest)", ("gtFine_trainvaltest.zip",),
             "https://www.cityscapes-dataset.com/file-handling/?packageID=1",
             probe="gtFine/val/*", md5="4237c19de34c8a376e9ba46b495d6f66",
             login="https://www.cityscapes-dataset.com/register/"),
)}


def _strip(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class Source:
    """Read access to the members of one download."""

    download: Download
    path: Path

    def names(self):
        """The member names (a set-like view: ``in`` is cheap)."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """How a member is named in messages."""
        return f"{self.path}:{name}"

    def require(self, names: list[str]) -> None:
        """Stop with one message listing members that are missing (before anything is written)."""
        have = self.names()
        missing = [n for n in names if n not in have]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise PrepareError(
                f"{self.path}: {len(missing)} expected member(s) missing from the {self.download.title} "
                f"({shown}); is it the complete official {self.download.file_names[0]}?"
            )


class FolderSource(Source):
    def __init__(self, download: Download, root: Path):
        self.download, self.path = download, Path(root)
        self._names: set[str] | None = None

    def names(self) -> set[str]:
        if self._names is None:
            top = self.download.probe.split("/")[0]
            base = self.path / top
            found = set()
            if base.is_file():
                found.add(top)
            for dirpath, _dirs, files in os.walk(base):
                rel = Path(dirpath).relative_to(self.path).as_posix()
                found.update(f"{rel}/{f}" for f in files)
            self._names = found
        return self._names

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise PrepareError(f"{self.path / name}: cannot be read ({exc.strerror or exc})") from None

    def describe(self, name: str) -> str:
        return str(self.path / name)

    def __getstate__(self):
        return {"download": self.download, "path": self.path, "_names": None}


class PlainFileSource(Source):
    """A download that is one file (the member name is its official file name)."""

    def __init__(self, download: Download, path: Path):
        self.download, self.path = download, Path(path)

    def names(self) -> set[str]:
        return {self.download.file_names[0]}

    def read(self, name: str) -> bytes:
        return self.path.read_bytes()

    def describe(self, name: str) -> str:
        return str(self.path)


class ZipSource(Source):
    def __init__(self, download: Download, path: Path):
        self.download, self.path = download, Path(path)
        self._zip = None
        try:
            self._open()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PrepareError(
                f"{self.path}: not a readable zip archive ({exc}); the download may be truncated — "
                f"expected the {download.title} from {download.url}"
            ) from None

    def _open(self):
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
            self._members = {_strip(i.filename): i for i in self._zip.infolist() if not i.is_dir()}
        return self._zip

    def names(self):
        self._open()
        return self._members.keys()

    def read(self, name: str) -> bytes:
        zf = self._open()
        try:
            return zf.read(self._members[name])
        except KeyError:
            raise PrepareError(f"{self.path}: member {name} missing") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise PrepareError(f"{self.path}: member {name} is corrupt ({exc}); re-download the archive") from None

    def __getstate__(self):
        return {"download": self.download, "path": self.path, "_zip": None}


class TarSource(Source):
    """An uncompressed tar: an index of (data offset, size) per member, read by seeking."""

    def __init__(self, download: Download, path: Path):
        self.download, self.path = download, Path(path)
        index: dict[str, tuple[int, int]] = {}
        try:
            with tarfile.open(self.path, mode="r:") as tf:
                for info in tf:
                    if info.isfile():
                        index[_strip(info.name)] = (info.offset_data, info.size)
        except tarfile.ReadError as exc:
            raise PrepareError(
                f"{self.path}: not a readable uncompressed tar archive ({exc}); the download may be truncated, "
                f"or compressed (extract it and pass the folder) — expected the {download.title} from {download.url}"
            ) from None
        end = self.path.stat().st_size
        for name, (offset, size) in index.items():
            if offset + size > end:
                raise PrepareError(f"{self.path}: truncated (member {name} ends past the end of the file); re-download it")
        self.index = index

    def names(self):
        return self.index.keys()

    def read(self, name: str) -> bytes:
        try:
            offset, size = self.index[name]
        except KeyError:
            raise PrepareError(f"{self.path}: member {name} missing") from None
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise PrepareError(f"{self.path}: member {name} is truncated; re-download the archive")
        return data


# --- finding and checking -----------------------------------------------------------------------------


def _folder_has_probe(root: Path, probe: str) -> bool:
    if not any(ch in probe for ch in "*?["):
        return (root / probe).exists()
    parent, pattern = probe.rsplit("/", 1)
    folder = root / parent
    if not folder.is_dir():
        return False
    with os.scandir(folder) as it:
        return any(fnmatch.fnmatch(e.name, pattern) for e in it)


def candidates(download: Download, downloads: Path) -> list[Path]:
    """Where a download may be, in the order they are tried (for the lookup and its error message)."""
    downloads = Path(downloads)
    out = [downloads / name for name in download.file_names]
    if not download.plain_file:
        stems = [name.split(".")[0] for name in download.file_names]
        out += [downloads] + [downloads / stem for stem in stems]
    return out


def locate(download: Download, downloads: Path) -> tuple[str, Path]:
    """(kind, path) of a download in ``downloads``: ``zip``, ``tar``, ``file`` or ``folder``."""
    downloads = Path(downloads)
    if not downloads.is_dir():
        raise PrepareError(f"{downloads}: downloads folder not found")
    for path in candidates(download, downloads):
        if path.is_file():
            if download.plain_file:
                return "file", path
            if zipfile.is_zipfile(path):
                return "zip", path
            return "tar", path
        if path.is_dir() and _folder_has_probe(path, download.probe):
            return "folder", path
    tried = ", ".join(str(p) for p in candidates(download, downloads))
    raise PrepareError(
        f"{downloads}: the {download.title} was not found (looked for {tried}"
        + ("" if download.plain_file else f" — an archive, or a folder holding {download.probe}")
        + f"); download {download.url}"
    )


def md5_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class VerifiedCache:
    """Checksums already verified, keyed by path, size and modification time (``verified.json``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def _key(self, archive: Path) -> str:
        st = archive.stat()
        return f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def known(self, archive: Path, md5: str) -> bool:
        return self.entries.get(self._key(archive)) == md5

    def add(self, archive: Path, md5: str) -> None:
        from ..io import atomic_write_json

        self.entries[self._key(archive)] = md5
        atomic_write_json(self.path, self.entries)


def verify(download: Download, kind: str, path: Path, cache: VerifiedCache | None, log=print) -> None:
    """Size and md5 against the published values (archives only; folders cannot be checked this way)."""
    if kind == "folder":
        return
    size = path.stat().st_size
    if download.size is not None and size != download.size:
        raise PrepareError(
            f"{path}: {size} bytes, expected {download.size} for the official {download.file_names[0]} "
            f"({'truncated' if size < download.size else 'not the official file'}); re-download {download.url}"
        )
    if download.md5 is None:
        return
    if cache is not None and cache.known(path, download.md5):
        return
    log(f"checking the md5 of {path} ({size / 2**30:.2f} GiB) ...")
    got = md5_of(path)
    if got != download.md5:
        raise PrepareError(
            f"{path}: md5 {got}, expected {download.md5} for the official {download.file_names[0]} "
            f"(truncated or a different file); re-download {download.url}, or pass --no-verify for a repacked copy"
        )
    if cache is not None:
        cache.add(path, download.md5)


def open_source(download: Download, downloads: Path, *, cache: VerifiedCache | None, check: bool, log=print) -> Source:
    kind, path = locate(download, downloads)
    if check:
        verify(download, kind, path, cache, log)
    if kind == "file":
        return PlainFileSource(download, path)
    if kind == "zip":
        return ZipSource(download, path)
    if kind == "tar":
        return TarSource(download, path)
    return FolderSource(download, path)
