"""Class vocabularies: data files ``data/classes/<dataset>.txt`` (one class per line)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError

CAPTION_PREFIX = "A picture of "
from .descriptors import BENCHMARKS  # noqa: E402,F401 (the public benchmarks, from their descriptors)


def text_name(name: str) -> str:
    """The class name as it goes into the caption: spaces and hyphens removed (ALGORITHM.md §1.2)."""
    return re.sub(r"[\s\-]+", "", name)


def caption_word(name: str, keep_spaces: bool = False) -> str:
    """A class name as it goes into the caption: the released rule (spaces and hyphens removed, §1.2) or,
    with ``keep_spaces`` (clean mode, folder, segment), the name as written with its whitespace collapsed."""
    return " ".join(name.split()) if keep_spaces else text_name(name)


def caption_for(names: list[str], keep_spaces: bool = False) -> str:
    """``"A picture of " + " ".join(names)`` with each name in its caption form."""
    return CAPTION_PREFIX + " ".join(caption_word(n, keep_spaces) for n in names)


@dataclass(frozen=True)
class Vocabulary:
    """Ordered class list; ``ids[i]`` is the dataset id of ``names[i]``."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    _pos: dict = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if len(self.ids) != len(self.names):
            raise ValueError("ids and names differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("duplicate class ids in vocabulary")
        if any(i <= 0 or i > 255 for i in self.ids):
            raise ValueError("class ids must be in 1..255 (0 is background)")
        object.__setattr__(self, "_pos", {i: k for k, i in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, class_id: int) -> bool:
        return class_id in self._pos

    def index_of(self, class_id: int) -> int:
        try:
            return self._pos[class_id]
        except KeyError:
            raise KeyError(f"class id {class_id} is not in the vocabulary") from None

    def name(self, class_id: int) -> str:
        return self.names[self.index_of(class_id)]

    def caption_name(self, class_id: int, keep_spaces: bool = False) -> str:
        return caption_word(self.name(class_id), keep_spaces)

    def id_of_name(self, name: str) -> int:
        """Dataset id of a class name (exact, then case/space/hyphen-insensitive)."""
        for i, n in zip(self.ids, self.names):
            if n == name:
                return i
        key = text_name(name).lower()
        for i, n in zip(self.ids, self.names):
            if text_name(n).lower() == key:
                return i
        raise KeyError(name)

    @classmethod
    def from_names(cls, names: list[str]) -> "Vocabulary":
        return cls(tuple(range(1, len(names) + 1)), tuple(names))


def parse_class_lines(text: str, source: str) -> Vocabulary:
    """Parse ``<id><TAB><name>`` or ``<name>`` lines ('#' comments and blank lines skipped)."""
    ids, names = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\d+)\s*[\t:]\s*(.+)$", line)
        if m:
            ids.append(int(m.group(1)))
            names.append(m.group(2).strip())
        else:
            ids.append(len(ids) + 1)
            names.append(line)
    if not names:
        raise ConfigError(f"{source}: no class names found (expected one class per line)")
    try:
        return Vocabulary(tuple(ids), tuple(names))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_vocabulary(dataset: str) -> Vocabulary:
    """The packaged vocabulary of a benchmark (``voc``, ``psc``, ``ade20k``, ``coco_object``, ``coco_stuff``, ``demo``)."""
    ref = resources.files("pnp_ovss") / "data" / "classes" / f"{dataset}.txt"
    if not ref.is_file():
        raise ConfigError(f"no packaged class list for dataset {dataset!r}")
    return parse_class_lines(ref.read_text(encoding="utf-8"), str(ref))


def is_class_list_text(text: str) -> bool:
    """A comma or a line break makes a class string a list, whatever its length; only a single name can be a file."""
    return "," in text or "\n" in text


def existing_file(text: str) -> Path | None:
    """``text`` as the path of an existing file, else None — also for a string no file system takes as a name
    (longer than a file name may be, or holding NUL), which is then simply not a file."""
    try:
        path = Path(text).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def class_spec_file(spec) -> Path | None:
    """The file a class spec names: a single name (no comma, no line break) that is an existing file."""
    if not isinstance(spec, str) or is_class_list_text(spec):
        return None
    return existing_file(spec)


def duplicate_names(names: list[str]) -> list[str]:
    seen, dups = set(), []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups


def vocabulary_from_spec(spec) -> Vocabulary:
    """User classes: a list, a comma-separated string (one line), lines of names (``id<TAB>name`` allowed, as
    in a file), or a path to a one-class-per-line file. Which it is follows from the syntax, never from asking
    the file system about a list."""
    if spec is None:
        raise ConfigError("the folder dataset needs 'classes' (a list, 'cat,sofa,lamp', or a file with one class per line)")
    if isinstance(spec, (list, tuple)):
        names = [str(s).strip() for s in spec]
    elif class_spec_file(spec) is not None:
        return parse_class_lines(class_spec_file(spec).read_text(encoding="utf-8"), spec)
    elif isinstance(spec, str) and "\n" in spec:
        return parse_class_lines(spec, "classes")
    elif isinstance(spec, str):
        names = [s.strip() for s in spec.split(",")]
    else:
        raise ConfigError(f"classes: expected a list or a string, got {type(spec).__name__}")
    empty = [k for k, name in enumerate(names, 1) if not name]
    if empty and len(empty) < len(names):
        raise ConfigError(
            f"classes: name {empty[0]} of {len(names)} in {spec!r} is empty (two commas in a row, or a comma at "
            "an end?); give every class a name"
        )
    if not names or len(empty) == len(names):
        raise ConfigError("classes: no class names given")
    dups = duplicate_names(names)
    if dups:
        raise ConfigError(
            f"classes: {', '.join(repr(d) for d in dups[:5])} given more than once (of {len(names)} names); "
            "give each class once"
        )
    return Vocabulary.from_names(names)
