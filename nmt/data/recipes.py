"""Recipes for published corpora: where each file lives, its checksum, how to unpack it.

A recipe downloads its archives (with a progress bar) into ``<out_dir>/downloads/``, or, with
``data.mirror=DIR``, reads the file of the same name from DIR and never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nmt.core.errors import NMTError
from nmt.data.corpus import Pair

KEP_BASE = "https://github.com/jungyeul/korean-parallel-corpora/raw/master/korean-english-news-v1"


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None  # None where the publisher changes the file over time

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Recipe:
    """A published corpus: one archive per split and a reader turning an archive into pairs."""

    archives: dict[str, Archive]
    read: Callable[[Path, str], dict[str, list[Pair]]]
    roles: dict[str, str]  # train/valid/test → published split name


def fetch(archive: Archive, downloads: Path, mirror: str | None) -> Path:
    """Return a local copy of ``archive``: from the mirror folder, the cache, or the network."""
    if mirror is not None:
        path = Path(mirror) / archive.filename
        if not path.is_file():
            raise NMTError(
                f"data.mirror: {path} not found (the recipe would download {archive.url})"
            )
    else:
        path = downloads / archive.filename
        if not path.is_file():
            _download(archive.url, path)
    if archive.sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != archive.sha256:
            raise NMTError(f"{path}: sha256 {digest} does not match the published {archive.sha256}")
    return path


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise NMTError(
            f"could not download {url} ({err}); to work offline, put {path.name} in a folder "
            "and pass data.mirror=FOLDER"
        ) from None
    os.replace(tmp, path)


def _decode_lines(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise NMTError(f"{name}:{line}: invalid UTF-8") from None
    return text.splitlines()


def _read_kep_news(path: Path, split: str) -> dict[str, list[Pair]]:
    """korean-english-park.<split>.tar.gz holds korean-english-park.<split>.{en,ko}."""
    with tarfile.open(path, "r:gz") as tar:
        sides = {}
        for lang in ("en", "ko"):
            name = f"korean-english-park.{split}.{lang}"
            member = tar.extractfile(name)
            if member is None:
                raise NMTError(f"{path}: the archive has no {name}")
            sides[lang] = _decode_lines(member.read(), f"{path}:{name}")
    if len(sides["en"]) != len(sides["ko"]):
        raise NMTError(
            f"{path}: {len(sides['en'])} English lines but {len(sides['ko'])} Korean lines"
        )
    return {split: list(zip(sides["en"], sides["ko"], strict=True))}


def _read_tatoeba(path: Path, split: str) -> dict[str, list[Pair]]:
    """kor-eng.zip holds kor.txt (english, korean, attribution); split by a hash of the English."""
    with zipfile.ZipFile(path) as zf:
        lines = _decode_lines(zf.read("kor.txt"), f"{path}:kor.txt")
    out: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    for number, line in enumerate(lines, start=1):
        columns = line.split("\t")
        if len(columns) < 2:
            raise NMTError(f"{path}:kor.txt:{number}: expected 'english<TAB>korean', found no tab")
        bucket = int(hashlib.md5(columns[0].encode()).hexdigest(), 16) % 1000
        name = "valid" if bucket < 10 else "test" if bucket < 25 else "train"
        out[name].append((columns[0], columns[1]))
    return out


RECIPES: dict[str, Recipe] = {
    "kep_news": Recipe(
        archives={
            "train": Archive(f"{KEP_BASE}/korean-english-park.train.tar.gz", None),
            "dev": Archive(
                f"{KEP_BASE}/korean-english-park.dev.tar.gz",
                "c195d911bf7030a4ccd275d0c70e548d9e605078551b525be14ebc270564af32",
            ),
            "test": Archive(
                f"{KEP_BASE}/korean-english-park.test.tar.gz",
                "be0cf6d7812bdf2767af311112b4584b94a5ca3adbc6db9361de0451093fb62d",
            ),
        },
        read=_read_kep_news,
        roles={"train": "train", "valid": "dev", "test": "test"},
    ),
    "tatoeba": Recipe(
        # The live file changes as Tatoeba grows: no fixed checksum.
        archives={"all": Archive("https://www.manythings.org/anki/kor-eng.zip", None)},
        read=_read_tatoeba,
        roles={"train": "train", "valid": "valid", "test": "test"},
    ),
}


def run_recipe(
    name: str, splits: list[str] | None, out_dir: Path, mirror: str | None
) -> tuple[dict[str, list[Pair]], list[str]]:
    """Fetch and read a recipe's archives; return pairs per role (train/valid/test) and notes.

    Without the ``train`` archive (e.g. ``data.splits=[dev,test]`` offline), the first split
    listed stands in for the training data, and a note says so.
    """
    if name not in RECIPES:
        raise NMTError(f"data.recipe: expected one of {', '.join(RECIPES)}; got {name!r}")
    recipe = RECIPES[name]
    splits = list(splits) if splits else list(recipe.archives)
    unknown = [s for s in splits if s not in recipe.archives]
    if unknown:
        raise NMTError(
            f"data.splits: {name} publishes {', '.join(recipe.archives)}; got {', '.join(unknown)}"
        )
    published: dict[str, list[Pair]] = {}
    for split in splits:
        path = fetch(recipe.archives[split], out_dir / "downloads", mirror)
        published.update(recipe.read(path, split))
    notes = []
    roles = {}
    for role, split in recipe.roles.items():
        if split in published:
            roles[role] = published[split]
        elif role == "train":
            roles[role] = published[splits[0]]
            notes.append(f"no '{split}' split fetched: training on '{splits[0]}'")
        else:
            raise NMTError(f"data.splits: the {role} role needs the '{split}' split; add it")
    return roles, notes
