"""Shared helpers of the benchmark scripts: where the real data is, and small subsets of it."""
import os
import time
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def shared_dir() -> Optional[Path]:
    """``$XRAYPROTOTYPE_SHARED`` or ``../shared`` beside the repository, if present."""
    candidate = Path(os.environ.get("XRAYPROTOTYPE_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


def kermany_subset(out_dir: Path, per_class: Dict[str, int], split: str = "train",
                   offset: int = 0) -> Optional[Path]:
    """Symlink the first ``per_class[c]`` (after ``offset``) images of each class of the real
    Kermany ``split`` into ``out_dir/<class>/``; None when ../shared is absent."""
    shared = shared_dir()
    if shared is None:
        return None
    source = shared / "data" / "kermany-224" / split
    for name, count in per_class.items():
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted((source / name).iterdir())[offset:offset + count]:
            link = target / image.name
            if not link.exists():
                link.symlink_to(image)
    return out_dir


def save_result(name: str, payload: dict) -> Path:
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
