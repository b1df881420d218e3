"""Public chest X-ray data sets, fetched with a checksum into the layout the library reads.

``fetch(name)`` downloads (resuming a broken download), checks the file against the checksum
published for it, unpacks it and returns what to give ``Dataset_Params(dataset_path=...)``;
a second call returns the same path from the cache without any request. ``list_datasets()``
says what each set is, its licence and which checksum it is checked against (and where that
checksum was published). Files go under ``root``: the argument, else ``$XRAYPROTOTYPE_DATA``,
else the user's cache folder (``pooch.os_cache("xrayprototype")``). ``$XRAYPROTOTYPE_DATA_URL``
names a mirror holding the same files under the same names.

Example:
    >>> from xrayprototype.datasets import fetch
    >>> path = fetch("kermany")        # .../kermany/chest_xray (train/ and test/)
    >>> gtf.Default(dataset_path=str(path / "train"), model_name="resnet18", num_epochs=5)
"""
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .errors import DatasetError, unknown_name

DATA_ENV = "XRAYPROTOTYPE_DATA"
MIRROR_ENV = "XRAYPROTOTYPE_DATA_URL"
IEEE8023_COMMIT = "6a4242344473ccb5ed0d2148d8c7bfb1691e4ed8"


@dataclass(frozen=True)
class DatasetEntry:
    """One data set: where it comes from, the checksum it must match (None: none published),
    where that checksum was published, and how it lands under the data root."""
    name: str
    title: str
    url: str
    file_name: str
    known_hash: Optional[str]
    hash_source: str
    licence: str
    layout: str        # "file" (used as downloaded), "kermany" or "ieee8023" (unpacked)
    folder: str        # under the data root
    result: str        # what fetch returns, relative to the folder ("" : the folder)
    usage: str


REGISTRY: Dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry(
        name="pneumoniamnist", title="PneumoniaMNIST (MedMNIST v2), 28x28, official splits",
        url="https://zenodo.org/record/6496656/files/pneumoniamnist.npz?download=1",
        file_name="pneumoniamnist.npz", known_hash="md5:28209eda62fecd6e6a2d98b1501bb15f",
        hash_source="MD5 published by the MedMNIST authors in medmnist/info.py "
                    "(github.com/MedMNIST/MedMNIST, INFO['pneumoniamnist']['MD5']); no "
                    "SHA-256 is published",
        licence="CC BY 4.0", layout="file", folder="pneumoniamnist", result="pneumoniamnist.npz",
        usage="Default(dataset_path='PATH') trains on its train + val splits; evaluate with "
              "Dataset_Params(dataset_path='PATH') (its test split)"),
    DatasetEntry(
        name="kermany", title="Kermany, Zhang & Goldbaum 2018 chest X-ray (pneumonia), "
                              "Mendeley Data rscbjbr9sj v2, ChestXRay2017.zip (about 1.2 GB)",
        url="https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
            "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
        file_name="ChestXRay2017.zip", known_hash=None,
        hash_source="none published where fetch could read it: Mendeley Data gives each "
                    "file's SHA-256 in its public API (GET https://data.mendeley.com/public-api/"
                    "datasets/rscbjbr9sj/files?folder_id=root&version=2, field "
                    "content_details.sha256_hash), which could not be read when this entry was "
                    "written, and no copy of it was found in public code; read it there and "
                    "pass known_hash='sha256:...' (or allow_unverified=True)",
        licence="CC BY 4.0", layout="kermany", folder="kermany", result="chest_xray",
        usage="Default(dataset_path='PATH/train'); evaluate on 'PATH/test'"),
    DatasetEntry(
        name="covid-ieee8023", title="ieee8023 COVID-19 image data collection (Cohen et al.), "
                                     f"GitHub archive of commit {IEEE8023_COMMIT[:10]}",
        url="https://github.com/ieee8023/covid-chestxray-dataset/archive/"
            f"{IEEE8023_COMMIT}.zip",
        file_name=f"covid-chestxray-dataset-{IEEE8023_COMMIT}.zip", known_hash=None,
        hash_source="none published: the content is pinned by the git commit, but GitHub "
                    "does not publish (or promise a stable) checksum of its archive zips; "
                    "fetch refuses it unless known_hash= or allow_unverified=True is given",
        licence="per image: column 'license' of labels.csv (several rows state none); keep "
                "the rows whose licence allows your use",
        layout="ieee8023", folder="covid-ieee8023", result="",
        usage="Default(dataset_path='PATH', path_to_csv='PATH/labels.csv', "
              "group_column='patientid') (frontal X-rays; label COVID-19 / normal / other)"),
)}


def data_root(root=None) -> Path:
    """Where fetched data live: ``root``, else ``$XRAYPROTOTYPE_DATA``, else the user's cache
    folder for xrayprototype."""
    if root is None and os.environ.get(DATA_ENV):
        root = os.environ[DATA_ENV]
    if root is None:
        import pooch

        root = pooch.os_cache("xrayprototype")
    return Path(root).expanduser()


def list_datasets() -> List[dict]:
    """What ``fetch`` knows: name, title, url, file name, known hash, where the hash was
    published, licence and how to use the result.

    Example:
        >>> [d["name"] for d in list_datasets()]
        ['pneumoniamnist', 'kermany', 'covid-ieee8023']
    """
    return [asdict(entry) for entry in REGISTRY.values()]


def fetch(name: str, root=None, *, url: Optional[str] = None, known_hash: Optional[str] = None,
          allow_unverified: bool = False, progress: bool = True, attempts: int = 3) -> Path:
    """Download data set ``name`` (checked, resumable, cached) and return its path in the
    layout the library reads.

    Args:
        name: one of ``list_datasets()`` (pneumoniamnist, kermany, covid-ieee8023).
        root: the data folder (default ``$XRAYPROTOTYPE_DATA`` or the user's cache).
        url: download from here instead (default ``$XRAYPROTOTYPE_DATA_URL/<file name>``
            when that is set, else the registry's address); the checksum stays the same.
        known_hash: the checksum to require (``"sha256:..."`` or ``"md5:..."``) instead of
            the registry's; needed for the sets with none published, unless
        allow_unverified: download a set that has no published checksum anyway, with a
            warning that gives its SHA-256 to pin.
        progress: show a progress bar while downloading.
        attempts: connection attempts per call; each resumes where the last stopped.

    Returns:
        Path: the ``.npz`` file, the class-folder tree, or the folder with ``labels.csv``.

    Example:
        >>> fetch("pneumoniamnist")
        PosixPath('/home/me/.cache/xrayprototype/pneumoniamnist/pneumoniamnist.npz')
    """
    from .data.archives import build_ieee8023, build_kermany, is_unpacked, unpack
    from .data.download import download

    if name not in REGISTRY:
        raise unknown_name("data set", name, REGISTRY, hint="see list_datasets() or "
                                                            "`xrayprototype fetch --list`")
    entry, folder = REGISTRY[name], data_root(root)
    target = folder / entry.folder
    result = target / entry.result if entry.result else target
    if entry.layout != "file" and is_unpacked(target):
        return result
    checksum = known_hash or entry.known_hash
    if checksum is None and not allow_unverified:
        raise DatasetError(
            f"data set '{name}' has no published checksum ({entry.hash_source}). Pass "
            "known_hash='sha256:...' if you have one from a source you trust, or "
            "allow_unverified=True (CLI: --allow-unverified) to download it unchecked; the "
            "warning then gives its SHA-256 to pin.")
    source = url or _mirror_url(entry) or entry.url
    folder.mkdir(parents=True, exist_ok=True)
    with _one_fetch_at_a_time(folder / f".{entry.folder}.lock"):
        if entry.layout == "file":
            return download(source, target, entry.file_name, checksum, attempts, progress)
        if is_unpacked(target):                  # another process finished it meanwhile
            return result
        archive = download(source, folder / "downloads", entry.file_name, checksum,
                           attempts, progress)
        build = {"kermany": build_kermany, "ieee8023": build_ieee8023}[entry.layout]
        unpack(archive, target, build, {"name": name, "url": source, "archive": str(archive),
                                        "known_hash": checksum})
    return result


def _one_fetch_at_a_time(path: Path):
    """A blocking lock shared by threads and processes: two fetches of one set into one root
    (parallel jobs) would write the same partial file; the second waits, then finds it done.
    The lock file stays (removing it would let two processes lock two files of one name)."""
    from filelock import FileLock

    try:
        return FileLock(str(path), thread_local=False, preserve_lock_file=True)
    except TypeError:                           # filelock 3.x: never removes a Unix lock file
        return FileLock(str(path), thread_local=False)


def _mirror_url(entry: DatasetEntry) -> Optional[str]:
    base = os.environ.get(MIRROR_ENV)
    return f"{base.rstrip('/')}/{entry.file_name}" if base else None
