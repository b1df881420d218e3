"""Unpack downloaded data-set archives into the layouts the library reads.

- the Kermany chest X-ray zip -> ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/`` (class folders);
- the ieee8023 COVID image collection (a GitHub archive) -> ``images/`` plus ``labels.csv``
  (``filename,label,patientid,...``: frontal X-rays only, the label from ``finding``).

Each unpacks into a sibling ``<target>.partial`` folder that is renamed to ``target`` only when
complete, with a ``.fetched.json`` note inside: a folder that exists is a finished one.
"""
import json
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Dict

from ..errors import DatasetError

DONE_NOTE = ".fetched.json"
KERMANY_MEMBER = re.compile(r"(?:^|/)chest_xray/(train|test|val)/(NORMAL|PNEUMONIA)/([^/]+)$")
#: the frontal projections of ieee8023's ``view`` column (the others are lateral, axial, ...)
FRONTAL_VIEWS = ("PA", "AP", "AP Supine")
LABEL_COLUMNS = ["filename", "label", "patientid", "finding", "view", "license", "url"]


def is_unpacked(target: Path) -> bool:
    return (Path(target) / DONE_NOTE).is_file()


def unpack(archive: Path, target: Path, build: Callable[[zipfile.ZipFile, Path], dict],
           note: dict) -> dict:
    """Run ``build(zip, folder)`` into ``<target>.partial``, then rename it to ``target``."""
    target = Path(target)
    if target.exists() and not is_unpacked(target):
        raise DatasetError(f"{target} exists but was not made by fetch (no {DONE_NOTE} in it); "
                           "move it away or fetch into another root (root=... / --root).")
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            summary = build(bundle, work)
    except zipfile.BadZipFile as error:
        shutil.rmtree(work, ignore_errors=True)
        raise DatasetError(f"{archive} is not a readable zip archive ({error}); delete it and "
                           "fetch again.") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    (work / DONE_NOTE).write_text(json.dumps(dict(note, **summary), indent=2))
    work.rename(target)
    return summary


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts \
        and "__MACOSX" not in parts and not parts[-1].startswith(".")


def _copy_member(bundle: zipfile.ZipFile, member: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with bundle.open(member) as source, open(destination, "wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)


def build_kermany(bundle: zipfile.ZipFile, folder: Path) -> dict:
    """``chest_xray/<split>/<class>/<file>`` from the members of ``ChestXRay2017.zip``
    (``__MACOSX`` and hidden files left out); every split must hold both classes."""
    counts: Dict[str, int] = {}
    for member in bundle.namelist():
        found = KERMANY_MEMBER.search(member)
        if not found or not _safe_name(member):
            continue
        split, label, file_name = found.groups()
        _copy_member(bundle, member, folder / "chest_xray" / split / label / file_name)
        key = f"{split}/{label}"
        counts[key] = counts.get(key, 0) + 1
    missing = [f"{s}/{c}" for s in ("train", "test") for c in ("NORMAL", "PNEUMONIA")
               if not counts.get(f"{s}/{c}")]
    if missing:
        raise DatasetError(f"the archive holds no images for {', '.join(missing)} (looked for "
                           "members named chest_xray/<train|test>/<NORMAL|PNEUMONIA>/<file>); it "
                           "is not the Kermany ChestXRay2017.zip. Delete it and fetch again.")
    return {"images": dict(sorted(counts.items()))}


def ieee8023_label(finding: str) -> str:
    """``COVID-19`` for a finding naming it (``Pneumonia/Viral/COVID-19``), ``normal`` for
    ``No Finding``, else ``other``."""
    text = str(finding).strip()
    if "COVID-19" in text:
        return "COVID-19"
    return "normal" if text.lower() in ("no finding", "normal") else "other"


def build_ieee8023(bundle: zipfile.ZipFile, folder: Path) -> dict:
    """``images/`` and ``labels.csv`` (frontal X-rays of ``metadata.csv``) from a GitHub
    archive of ieee8023/covid-chestxray-dataset; ``metadata.csv`` is kept beside them."""
    import pandas as pd

    names = set(bundle.namelist())
    metadata = sorted((n for n in names if PurePosixPath(n).name == "metadata.csv"
                       and len(PurePosixPath(n).parts) <= 2), key=len)
    if not metadata:
        raise DatasetError("the archive has no metadata.csv at its top level; it is not the "
                           "ieee8023 covid-chestxray-dataset. Delete it and fetch again.")
    top = str(PurePosixPath(metadata[0]).parent).strip(".")
    with bundle.open(metadata[0]) as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    _copy_member(bundle, metadata[0], folder / "metadata.csv")
    rows, missing = [], 0
    for _, row in _frontal_xrays(table).iterrows():
        member = "/".join(p for p in (top, row.get("folder") or "images", row["filename"]) if p)
        if member not in names or not _safe_name(member):
            missing += 1
            continue
        name = "images/" + PurePosixPath(row["filename"]).name
        _copy_member(bundle, member, folder / name)
        rows.append([name, ieee8023_label(row["finding"]), row.get("patientid", ""),
                     row["finding"], row["view"], row.get("license", ""), row.get("url", "")])
    if not rows:
        raise DatasetError("no frontal X-ray of metadata.csv was found in the archive's "
                           f"images folder ({missing} listed but missing).")
    labels = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    labels.to_csv(folder / "labels.csv", index=False)
    return {"images": len(rows), "listed_but_missing": missing,
            "labels": {k: int(v) for k, v in labels["label"].value_counts().items()}}


def _frontal_xrays(table):
    """Rows of frontal views (PA, AP, AP Supine) of X-ray images (CT rows dropped)."""
    for column in ("filename", "finding", "view"):
        if column not in table.columns:
            raise DatasetError(f"ieee8023 metadata.csv has no '{column}' column (columns: "
                               f"{list(table.columns)}); the archive is not the expected one.")
    keep = table["view"].str.strip().isin(FRONTAL_VIEWS)
    if "modality" in table.columns:
        keep &= table["modality"].str.strip().str.lower().isin(["x-ray", ""])
    return table[keep]
