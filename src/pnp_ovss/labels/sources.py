"""Where the per-image classes come from (``labels.source``), except the live API (``openai_live``).

* ``gpt4o_file``: a JSON ``{key: raw answer}``. By default the authors' file for the benchmark,
  downloaded once from their repository into the user cache (``$PNP_OVSS_CACHE`` or
  ``~/.cache/pnp-ovss``) with a progress bar, checksum verified, never downloaded again;
  ``labels.file`` points at a local copy instead.
  An image without an answer: the released code crashes (KeyError). ``faithful`` stops with a
  LabelError naming the image and the file; ``clean`` uses the "no output" branch (§2.1), which with
  ``no_fallback_class`` (clean's default) gives no class.
* ``ground_truth``: the classes present in the annotation (the oracle upper bound).
* ``list``: the same classes for every image (``labels.classes``; null = the whole vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..descriptors import DESCRIPTORS
from ..errors import LabelError
from ..vocab import Vocabulary, class_spec_file
from .parser import ParsedAnswer, no_answer, parse_answer, resolve_no_fallback

LOG = logging.getLogger(__name__)

CACHE_ENV = "PNP_OVSS_CACHE"
AUTHORS_REPOSITORY = "letitiabanana/PnP-OVSS"
AUTHORS_COMMIT = "e43996255fac8526bb43a0375a734dbb638d1a61"
AUTHORS_BASE_URL = f"https://raw.githubusercontent.com/{AUTHORS_REPOSITORY}/{AUTHORS_COMMIT}/GPT4o_classification/"

#: sha256 of the authors' answer files at AUTHORS_COMMIT (from the dataset descriptors)
AUTHORS_SHA256 = {d.name: d.authors_answers[1] for d in DESCRIPTORS.values() if d.authors_answers}
DOWNLOAD_CHUNK = 1 << 16


# --- the authors' files --------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """``$PNP_OVSS_CACHE``, else ``~/.cache/pnp-ovss``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pnp-ovss"


def authors_file_name(dataset: str) -> str:
    if dataset not in AUTHORS_SHA256:
        raise LabelError(
            f"there is no authors' GPT-4o answer file for dataset {dataset!r} (only for "
            f"{', '.join(AUTHORS_SHA256)}); set labels.file or choose another labels.source"
        )
    return DESCRIPTORS[dataset].authors_answers[0]


def authors_url(dataset: str, base_url: str = AUTHORS_BASE_URL) -> str:
    return base_url.rstrip("/") + "/" + authors_file_name(dataset)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(DOWNLOAD_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; the file appears only if its sha256 matches."""
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise LabelError(
                f"{url}: downloaded file has sha256 {digest.hexdigest()}, expected {sha256}; "
                f"not using it (download it by hand and set labels.file)"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LabelError(
            f"cannot download {url} ({exc}); download it by hand and set labels.file to its path"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def authors_cache_path(dataset: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the authors' answer file of ``dataset`` is kept in the user cache (whether or not it is there yet)."""
    return Path(cache_dir or user_cache_dir()) / "gpt4o" / authors_file_name(dataset)


def authors_answers_path(
    dataset: str, cache_dir: str | os.PathLike | None = None, base_url: str = AUTHORS_BASE_URL, progress: bool = True
) -> Path:
    """The authors' answer file in the user cache, downloaded on first use and checksum-verified."""
    path = authors_cache_path(dataset, cache_dir)  # a LabelError for a dataset without an authors' file
    expected = AUTHORS_SHA256[dataset]
    if path.is_file():
        actual = sha256_of(path)
        if actual != expected:
            raise LabelError(
                f"{path}: cached file has sha256 {actual}, expected {expected}; delete it to download it again"
            )
        return path
    LOG.info("downloading the authors' GPT-4o answers for %s into %s", dataset, path)
    return download(authors_url(dataset, base_url), path, expected, progress=progress)


def answers_file_path(dataset: str, file: str | os.PathLike | None, cache_dir=None) -> Path:
    """``labels.file`` if given (must exist), else the authors' file for the dataset."""
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise LabelError(f"{path}: labels.file not found (expected a JSON of GPT-4o answers)")
        return path
    return authors_answers_path(dataset, cache_dir)


def load_answers(path: str | os.PathLike) -> dict[str, str]:
    """A JSON object ``{image key: raw answer string}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelError(f"{path}: answer file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LabelError(f"{path}: expected a JSON object {{image id: answer}}, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise LabelError(f"{path}: the answer for {key!r} is {type(value).__name__}, expected a string")
    return data


def answer_for(answers: dict[str, str], key: str, image_id: str, path, mode: str) -> str | None:
    """The raw answer of an image; None (the "no output" branch) for a missing key in clean mode."""
    if key in answers:
        return answers[key]
    if mode == "clean":
        return None
    raise LabelError(
        f"image {image_id}: no answer under key {key!r} in {path} (the released code crashes here; "
        f"mode: clean uses the 'no output' branch instead)"
    )


def parse_with_context(raw: str | None, dataset: str, vocab: Vocabulary, params: dict, where: str) -> ParsedAnswer:
    """:func:`parse_answer` (or the "no output" branch for None) with the image named in errors."""
    mode = params["mode"]
    min_probability = params.get("min_probability", 70)
    no_fallback = params.get("no_fallback_class")
    try:
        if raw is None:
            return no_answer(dataset, vocab, mode, min_probability, no_fallback)
        return parse_answer(raw, dataset, vocab, mode, min_probability, no_fallback)
    except LabelError as exc:
        raise LabelError(f"{where}: {exc}") from None


def labels_from_file(dataset, image_ids: list[str], params: dict, path) -> dict[str, ParsedAnswer]:
    answers = load_answers(path)
    out = {}
    for image_id in image_ids:
        key = dataset.gpt4o_key(image_id)
        raw = answer_for(answers, key, image_id, path, params["mode"])
        out[image_id] = parse_with_context(raw, dataset.name, dataset.vocabulary, params, f"image {image_id} in {path}")
    return out


# --- ground truth and fixed lists ----------------------------------------------------------------


def selection_without_parsing(ids: list[int], vocab: Vocabulary, params: dict) -> ParsedAnswer:
    """A selection given directly (no answer): the fallback rule still applies when it is empty."""
    no_fallback = resolve_no_fallback(params["mode"], params.get("no_fallback_class"))
    fallback = not ids and not no_fallback
    return ParsedAnswer(
        raw=None,
        parsed=[],
        selected=[vocab.ids[0]] if fallback else list(ids),
        fallback_used=fallback,
        confident=list(ids),
    )


def labels_from_ground_truth(dataset, image_ids: list[str], params: dict) -> dict[str, ParsedAnswer]:
    vocab = dataset.vocabulary
    out = {}
    for image_id in image_ids:
        ids = [int(i) for i in dataset.gt_class_ids(image_id)]
        unknown = [i for i in ids if i not in vocab]
        if unknown:
            raise LabelError(f"image {image_id}: ground-truth class ids {unknown} are not in the {dataset.name} vocabulary")
        out[image_id] = selection_without_parsing(ids, vocab, params)
    return out


def class_names_of(classes) -> list[str] | None:
    """``labels.classes``: None, a list, a comma-separated string or a file with one class per line."""
    if classes is None:
        return None
    if isinstance(classes, (list, tuple)):
        names = [str(c).strip() for c in classes]
    elif isinstance(classes, str) and (class_spec_file(classes) is not None or "\n" in classes):
        # a file, or lines of names (a list decided by its syntax: no file system call on a list)
        file = class_spec_file(classes)
        text = file.read_text(encoding="utf-8") if file is not None else classes
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    elif isinstance(classes, str):
        names = [c.strip() for c in classes.split(",")]
    else:
        raise LabelError(f"labels.classes: expected a list or a string, got {type(classes).__name__}")
    names = [n for n in names if n]
    if not names:
        raise LabelError("labels.classes: no class names given")
    return names


def resolve_class_list(vocab: Vocabulary, classes, dataset_name: str = "") -> list[int]:
    """Dataset ids of the given class names, in the given order without repeats (None: all classes)."""
    names = class_names_of(classes)
    if names is None:
        return list(vocab.ids)
    ids: list[int] = []
    for name in names:
        try:
            class_id = vocab.id_of_name(name)
        except KeyError:
            raise LabelError(
                f"labels.classes: unknown class name {name!r} for dataset {dataset_name or '?'} "
                f"(known: {', '.join(vocab.names[:12])}{', ...' if len(vocab) > 12 else ''})"
            ) from None
        if class_id not in ids:
            ids.append(class_id)
    return ids


def labels_from_list(dataset, image_ids: list[str], params: dict, classes) -> dict[str, ParsedAnswer]:
    ids = resolve_class_list(dataset.vocabulary, classes, dataset.name)
    return {image_id: selection_without_parsing(ids, dataset.vocabulary, params) for image_id in image_ids}
