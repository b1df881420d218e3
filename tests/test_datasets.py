"""``xrayprototype.datasets.fetch`` and ``xrayprototype fetch``: public data sets downloaded
with a checksum, resumed after a broken connection, served from the cache, and unpacked into
a layout the library trains on.

Nothing leaves the machine: a local HTTP server on 127.0.0.1 (ephemeral port, with ``Range``
support) serves small archives built here in the real archives' layouts.
"""
import hashlib
import io
import json
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from xrayprototype import cli
from xrayprototype.config import DataConfig
from xrayprototype.data import load_eval, load_train_val
from xrayprototype.datasets import IEEE8023_COMMIT, MIRROR_ENV, REGISTRY, fetch, list_datasets
from xrayprototype.errors import DatasetError


# ---------------------------------------------------------------------------- local server
class FixtureServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; logs every request's path and Range
    header; a name in ``break_next`` gets half its body and a closed connection, once."""

    def __init__(self, files):
        self.files, self.requests, self.break_next = dict(files), [], set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):                                        # noqa: N802
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range") or
                                     "bytes=0-").group(1))
                if start >= len(body) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in server.break_next:
                    server.break_next.discard(name)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return f"{self.base}/{name}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.clip(np.random.default_rng(value).normal(value, 20, (32, 32)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def kermany_zip() -> bytes:
    """ChestXRay2017.zip's layout, with the __MACOSX and .DS_Store litter of the real one."""
    members = {"chest_xray/.DS_Store": b"junk", "__MACOSX/chest_xray/._train": b"junk"}
    for split, count in (("train", 6), ("test", 3)):
        for k in range(count):
            members[f"chest_xray/{split}/NORMAL/IM-{split}{k:04d}-0001.jpeg"] = _jpeg(60)
            members[f"chest_xray/{split}/PNEUMONIA/person{k}_bacteria_{k}.jpeg"] = _jpeg(180)
            members[f"__MACOSX/chest_xray/{split}/NORMAL/._IM-{k}.jpeg"] = b"junk"
    return _zip(members)


def ieee8023_zip() -> bytes:
    """A GitHub archive of covid-chestxray-dataset: metadata.csv (quoted notes) + images/,
    with lateral, CT and missing-image rows that must be left out."""
    top = f"covid-chestxray-dataset-{IEEE8023_COMMIT}"
    rows, members = [], {}
    findings = {"COVID-19": "Pneumonia/Viral/COVID-19", "normal": "No Finding",
                "other": "Pneumonia/Bacterial/Streptococcus"}
    for c, (label, finding) in enumerate(findings.items()):
        for patient in range(4):
            for k, view in enumerate(("PA", "AP Supine") if patient == 0 else ("AP",)):
                name = f"{label}-{patient}-{k}.jpg"
                members[f"{top}/images/{name}"] = _jpeg(60 + 50 * c)
                rows.append([f"{c}{patient}", finding, view, "X-ray", "images", name, "CC BY"])
    rows += [["00", findings["COVID-19"], "L", "X-ray", "images", "lateral.jpg", ""],
             ["01", findings["COVID-19"], "Axial", "CT", "volumes", "ct.jpg", ""],
             ["02", findings["other"], "PA", "X-ray", "images", "not-in-archive.jpg", ""]]
    members[f"{top}/images/lateral.jpg"] = members[f"{top}/volumes/ct.jpg"] = _jpeg(1)
    lines = ["patientid,finding,view,modality,folder,filename,license,url,clinical_notes"]
    lines += [",".join(r) + ',https://example.org,"a note, with a comma"' for r in rows]
    members[f"{top}/metadata.csv"] = "\n".join(lines).encode()
    return _zip(members)


def pneumoniamnist_npz() -> bytes:
    rng, arrays = np.random.default_rng(0), {}
    for split, count in (("train", 200), ("val", 50), ("test", 50)):   # 235 kB: 3+ chunks
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    files = {"pneumoniamnist.npz": pneumoniamnist_npz(),
             REGISTRY["kermany"].file_name: kermany_zip(),
             REGISTRY["covid-ieee8023"].file_name: ieee8023_zip()}
    served = FixtureServer(files)
    yield served
    served.httpd.shutdown()


# ---------------------------------------------------------------------------- checksums
def test_every_set_names_its_checksum_source_and_licence():
    for entry in list_datasets():
        assert entry["licence"] and entry["hash_source"]
        if entry["known_hash"] is None:
            assert entry["hash_source"].startswith("none published")
    assert REGISTRY["pneumoniamnist"].known_hash == "md5:28209eda62fecd6e6a2d98b1501bb15f"


def test_a_set_with_no_published_checksum_is_refused_before_any_request(server, tmp_path):
    server.requests.clear()
    with pytest.raises(DatasetError, match="no published checksum.*allow_unverified=True"):
        fetch("kermany", tmp_path, url=server.url(REGISTRY["kermany"].file_name))
    assert server.requests == [] and not (tmp_path / "kermany").exists()


def test_a_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    """The fixture npz is not the real PneumoniaMNIST: the registry's MD5 refuses it."""
    data = server.files["pneumoniamnist.npz"]
    with pytest.raises(DatasetError) as error:
        fetch("pneumoniamnist", tmp_path, url=server.url("pneumoniamnist.npz"), progress=False)
    message = str(error.value)
    assert "pneumoniamnist.npz" in message and REGISTRY["pneumoniamnist"].known_hash in message
    assert "md5:" + hashlib.md5(data).hexdigest() in message
    assert "try again" in message
    assert list((tmp_path / "pneumoniamnist").iterdir()) == []


def test_a_missing_file_on_the_server_is_said_at_once(server, tmp_path):
    server.requests.clear()
    with pytest.raises(DatasetError, match="answered 404 .* check the address"):
        fetch("pneumoniamnist", tmp_path, url=server.url("moved.npz"), progress=False)
    assert len(server.requests) == 1                  # not retried


# ---------------------------------------------------------------------------- resume + cache
@pytest.mark.parametrize("attempts", [3, 1], ids=["same-call", "next-call"])
def test_a_broken_download_resumes_with_a_range_request(server, tmp_path, attempts):
    data = server.files["pneumoniamnist.npz"]
    server.requests.clear()
    server.break_next.add("pneumoniamnist.npz")
    options = dict(url=server.url("pneumoniamnist.npz"), known_hash=sha256(data),
                   progress=False, attempts=attempts)
    if attempts == 1:                   # the connection broke and this call gave up
        with pytest.raises(DatasetError, match="again to resume"):
            fetch("pneumoniamnist", tmp_path, **options)
        assert (tmp_path / "pneumoniamnist" / "pneumoniamnist.npz.part").is_file()
    path = fetch("pneumoniamnist", tmp_path, **options)
    assert path.read_bytes() == data
    assert [r[1] is None for r in server.requests] == [True, False]
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1][1]).group(1))
    assert 0 < resumed_at < len(data)          # only the rest was asked for
    assert [p.name for p in path.parent.iterdir()] == ["pneumoniamnist.npz"]

    server.requests.clear()                     # the second call: from the cache, no request
    assert fetch("pneumoniamnist", tmp_path, **options) == path
    assert server.requests == []


def test_two_fetches_of_one_set_at_once_download_it_once(server, tmp_path):
    """Parallel jobs sharing a data root: the second waits for the first, then finds it."""
    name = REGISTRY["kermany"].file_name
    server.requests.clear()
    paths = []
    jobs = [threading.Thread(target=lambda: paths.append(fetch(
        "kermany", tmp_path, url=server.url(name), known_hash=sha256(server.files[name]),
        progress=False))) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert paths == [tmp_path / "kermany" / "chest_xray"] * 2
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------- layouts
def test_kermany_unpacks_into_class_folders_the_library_trains_on(server, tmp_path):
    name = REGISTRY["kermany"].file_name
    server.requests.clear()
    path = fetch("kermany", tmp_path, url=server.url(name),
                 known_hash=sha256(server.files[name]), progress=False)
    assert path == tmp_path / "kermany" / "chest_xray"
    assert sorted(p.name for p in path.iterdir()) == ["test", "train"]
    assert not list(path.rglob(".*")) and not list(tmp_path.rglob("__MACOSX"))

    data = load_train_val(DataConfig(dataset_path=str(path / "train")))
    assert data.classes == ["NORMAL", "PNEUMONIA"] and len(data.train) + len(data.val) == 12
    test = load_eval(DataConfig(dataset_path=str(path / "test")), data.classes)
    assert test.class_counts() == {"NORMAL": 3, "PNEUMONIA": 3}

    server.requests.clear()
    assert fetch("kermany", tmp_path, url=server.url(name)) == path     # cached, no checksum
    assert server.requests == []                                          # needed again


@pytest.mark.slow
def test_a_fetched_set_trains_a_tiny_pytorch_model(server, tmp_path):
    pytest.importorskip("torch")
    from xrayprototype import prototype

    name = REGISTRY["kermany"].file_name
    path = fetch("kermany", tmp_path / "data", url=server.url(name),
                 known_hash=sha256(server.files[name]), progress=False)
    gtf = prototype(verbose=0, workspace=str(tmp_path / "ws"))
    gtf.Prototype("Fetched", "resnet18", backend="pytorch")
    gtf.Default(dataset_path=str(path / "train"), model_name="resnet18", num_epochs=1,
                use_pretrained=False, freeze_base_network=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(4)
    summary = gtf.Train()
    assert summary["epochs_completed"] == 1 and np.isfinite(summary["final_train_loss"])


def test_ieee8023_gives_frontal_xrays_with_labels_and_patients(server, tmp_path):
    name = REGISTRY["covid-ieee8023"].file_name
    with pytest.warns(UserWarning, match="SHA-256 is [0-9a-f]{64}"):
        folder = fetch("covid-ieee8023", tmp_path, url=server.url(name), allow_unverified=True,
                       progress=False)
    rows = (folder / "labels.csv").read_text().splitlines()
    assert rows[0] == "filename,label,patientid,finding,view,license,url"
    assert len(rows) == 1 + 15 and not any("lateral" in r or "ct.jpg" in r for r in rows)
    note = json.loads((folder / ".fetched.json").read_text())
    assert note["labels"] == {"COVID-19": 5, "normal": 5, "other": 5}
    assert note["listed_but_missing"] == 1

    data = load_train_val(DataConfig(dataset_path=str(folder),
                                     path_to_csv=str(folder / "labels.csv"),
                                     group_column="patientid"))
    assert data.classes == ["COVID-19", "normal", "other"]
    assert not set(data.train.groups) & set(data.val.groups)


def test_the_label_rule_matches_the_shared_ieee8023_labels(shared_dir):
    """The shared copy (a third party's frontal, permissive subset, 2020-06) labels the same."""
    import pandas as pd

    from xrayprototype.data.archives import FRONTAL_VIEWS, ieee8023_label

    table = pd.read_csv(shared_dir / "data" / "covid-ieee8023-permissive" / "labels.csv",
                        dtype=str, keep_default_na=False)
    assert list(table["finding"].map(ieee8023_label)) == list(table["label"])
    assert set(table["view"]) <= set(FRONTAL_VIEWS)


# ---------------------------------------------------------------------------- CLI
def test_cli_fetch_and_list(server, tmp_path, monkeypatch, capsys):
    data = server.files["pneumoniamnist.npz"]
    monkeypatch.setenv(MIRROR_ENV, server.base)           # a mirror with the same file names
    assert cli.main(["fetch", "pneumoniamnist", "--root", str(tmp_path), "--known-hash",
                     sha256(data), "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(tmp_path / "pneumoniamnist" / "pneumoniamnist.npz")
    assert load_train_val(DataConfig(dataset_path=result["path"])).classes == \
        ["NORMAL", "PNEUMONIA"]

    assert cli.main(["fetch", "--list", "--quiet"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == list(REGISTRY)
    assert cli.main(["fetch", "kermany", "--root", str(tmp_path)]) == 2
    assert "--allow-unverified" in capsys.readouterr().err
