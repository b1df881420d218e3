"""Bad inputs (issue 13, failures 1, 4 and 9): a class whose images are all unreadable,
every kind of per-file decode failure (in training, Evaluate and Infer), and CSVs whose
columns are named. Tiny generated data (32 px) and a mobilenet_v3_small from scratch.
"""
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xrayprototype import prototype
from xrayprototype.config import DataConfig
from xrayprototype.data import load_train_val
from xrayprototype.data.checks import UnreadableDataError
from xrayprototype.data.decode import CorruptImageError, load_image
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import ConfigError, DatasetError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def small_data(root, per_class=10, test_per_class=4):
    return make_synthetic_chest_xrays(Path(root), num_train_per_class=per_class,
                                      num_test_per_class=test_per_class, image_size=32, seed=0)


def small_run(workspace, data, experiment, epochs=1):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Bad", experiment, backend="pytorch")
    gtf.Default(dataset_path=str(data), model_name="mobilenet_v3_small",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    return gtf


# ---------------------------------------------------------------------------- exotic files
def _dicom(path, pixels=True, codec=False):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless,
                             SecondaryCaptureImageStorage, generate_uid)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if codec else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality = "DX"
    if pixels:
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60]) if codec \
            else np.zeros((32, 32), np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).Modality == "DX"


def write_exotic_files(folder):
    """Files that fail in the decoder with different exception types; name -> path."""
    folder = Path(folder)
    files = {"not_dicom": folder / "bad-not-dicom.dcm",
             "dicom_no_pixels": folder / "bad-no-pixels.dcm",
             "dicom_codec": folder / "bad-codec.dcm",
             "bomb": folder / "bad-bomb.png",
             "empty": folder / "bad-empty.jpeg"}
    files["not_dicom"].write_bytes(b"this is not a DICOM file " * 20)
    _dicom(files["dicom_no_pixels"], pixels=False)
    _dicom(files["dicom_codec"], codec=True)
    Image.new("L", (3000, 3000)).save(files["bomb"])     # over the limit the fixture sets
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture
def pixel_limit(monkeypatch):
    """Pillow's decompression-bomb limit lowered so that a 3000x3000 PNG exceeds twice it
    (DecompressionBombError) while the 32 px images stay far below."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)


INJECTED = {"struct": struct.error("unpack requires a buffer of 4 bytes"),
            "index": IndexError("list index out of range"),
            "runtime": RuntimeError("decoder crashed"),
            "memory": MemoryError()}


@pytest.fixture
def injected_failures(monkeypatch):
    """Files named ``inject-<kind>.png`` raise that exception inside the decoder."""
    from xrayprototype.data import decode

    real_open = decode._open

    def failing_open(path, size_hint):
        for kind, error in INJECTED.items():
            if Path(path).name == f"inject-{kind}.png":
                raise error
        return real_open(path, size_hint)

    monkeypatch.setattr(decode, "_open", failing_open)


def write_injected_files(folder):
    paths = {}
    for kind in INJECTED:
        paths[kind] = Path(folder) / f"inject-{kind}.png"
        Image.new("L", (32, 32), 128).save(paths[kind])
    return paths


@pytest.mark.parametrize("kind", ["not_dicom", "dicom_no_pixels", "dicom_codec", "bomb",
                                  "empty"])
def test_each_exotic_file_is_a_corrupt_image_error_naming_it(tmp_path, pixel_limit, kind):
    path = write_exotic_files(tmp_path)[kind]
    with pytest.raises(CorruptImageError, match=path.name):
        load_image(path, 32)


@pytest.mark.parametrize("kind", sorted(INJECTED))
def test_any_exception_type_in_the_decoder_is_a_corrupt_image_error(tmp_path,
                                                                    injected_failures, kind):
    path = write_injected_files(tmp_path)[kind]
    with pytest.raises(CorruptImageError, match=f"{path.name}.*{type(INJECTED[kind]).__name__}"):
        load_image(path, 32)


# ---------------------------------------------------------------------------- a class unreadable
def test_a_class_whose_images_are_all_unreadable_is_refused_with_counts(tmp_path):
    data = small_data(tmp_path / "data")
    for image in (data / "train" / "NORMAL").iterdir():
        image.write_bytes(b"")
    gtf = small_run(tmp_path / "ws", data / "train", "no-normal")
    with pytest.raises(UnreadableDataError) as caught:
        gtf.Train()
    message = str(caught.value)
    assert "class 'NORMAL' has no readable image in the train split" in message
    assert "NORMAL 0 readable / " in message and "PNEUMONIA" in message
    assert "synthetic-IM-0001.jpeg (the file is empty (0 bytes))" in message
    assert "Fix:" in message
    assert not list((tmp_path / "ws").rglob("best.*"))           # nothing was trained


def test_every_image_unreadable_is_refused_clearly(tmp_path):
    data = small_data(tmp_path / "data", per_class=6)
    for image in (data / "train").rglob("*.jpeg"):
        image.write_bytes(b"garbage")
    gtf = small_run(tmp_path / "ws", data / "train", "nothing")
    with pytest.raises(UnreadableDataError, match=r"class 'NORMAL' has no readable.*class "
                                                  r"'PNEUMONIA' has no readable"):
        gtf.Train()


def test_few_readable_images_of_a_class_warn(tmp_path):
    from xrayprototype.data.checks import check_readable

    data = small_data(tmp_path / "data", per_class=6)
    records = load_train_val(DataConfig(dataset_path=str(data / "train"))).train
    normal = [p for p, label in zip(records.paths, records.labels) if label == 0]
    skipped = {path: "empty" for path in normal[1:]}
    with pytest.warns(UserWarning, match="class 'NORMAL' keeps only 1 readable"):
        counts = check_readable({"train": (records, skipped)})
    assert counts["train"]["NORMAL"] == {"readable": 1, "skipped": len(normal) - 1}


# ---------------------------------------------------------------------------- one trained run
@pytest.fixture(scope="module")
def trained_with_bad_files(tmp_path_factory):
    """One run whose training folders also hold every exotic file; returns paths."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    root = tmp_path_factory.mktemp("bad_inputs")
    data = small_data(root / "data")
    exotic = write_exotic_files(data / "train" / "NORMAL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gtf = small_run(root / "ws", data / "train", "exotic")
        gtf.Dataset_Params(dataset_path=[str(data / "train"), str(data / "test")])
        summary = gtf.Train()
    yield {"root": root, "data": data, "exotic": exotic, "summary": summary}
    monkeypatch.undo()


def _state(root):
    import json

    return json.loads((root / "ws" / "Bad" / "exotic" / "experiment.json").read_text())


def test_training_skips_and_lists_every_exotic_file(trained_with_bad_files):
    state = _state(trained_with_bad_files["root"])
    assert state["status"] == "trained"
    skipped = state["dataset"]["skipped_files"]
    assert sorted(skipped) == sorted(str(p) for p in trained_with_bad_files["exotic"].values())
    assert "DecompressionBombError" in skipped[str(trained_with_bad_files["exotic"]["bomb"])]
    counts = state["dataset"]["readable_class_counts"]
    assert sum(c["NORMAL"]["skipped"] for c in counts.values()) == 5


def test_training_with_on_corrupt_error_names_the_file(tmp_path, pixel_limit):
    data = small_data(tmp_path / "data", per_class=6)
    bad = write_exotic_files(data / "train" / "PNEUMONIA")["dicom_codec"]
    for other in bad.parent.glob("bad-*"):
        if other != bad:
            other.unlink()
    gtf = small_run(tmp_path / "ws", data / "train", "strict")
    gtf.Dataset_Params(on_corrupt="error")
    with pytest.raises(CorruptImageError, match=r"bad-codec\.dcm.*RuntimeError"):
        gtf.Train()


def _opened(trained, tmp_path):
    gtf = prototype(verbose=1, workspace=trained["root"] / "ws")
    gtf.Prototype("Bad", "exotic", eval_infer=True)
    return gtf


def test_infer_on_a_folder_survives_every_bad_file(trained_with_bad_files, tmp_path,
                                                   injected_failures, pixel_limit, capsys):
    folder = tmp_path / "folder"
    shutil.copytree(trained_with_bad_files["data"] / "test" / "NORMAL", folder)
    bad = {**write_exotic_files(folder), **write_injected_files(folder)}
    gtf = _opened(trained_with_bad_files, tmp_path)
    results = gtf.Infer(img_dir=str(folder))
    by_name = {Path(r["img_name"]).name: r for r in results}
    assert len(results) == len(list(folder.iterdir()))
    for path in bad.values():
        result = by_name[path.name]
        assert result["predicted_class"] is None and result["skipped"]
    assert "MemoryError" in by_name["inject-memory.png"]["skipped"]
    good = [r for r in results if not r.get("skipped")]
    assert len(good) == 4 and all(r["predicted_class"] in ("NORMAL", "PNEUMONIA") for r in good)
    assert "bad-codec.dcm: skipped, unreadable" in capsys.readouterr().out


def test_infer_on_one_bad_file_raises_naming_it(trained_with_bad_files, tmp_path, pixel_limit):
    gtf = _opened(trained_with_bad_files, tmp_path)
    for path in write_exotic_files(tmp_path).values():
        with pytest.raises(DatasetError, match=path.name):
            gtf.Infer(img_name=str(path))


def test_evaluate_skips_and_lists_bad_files(trained_with_bad_files, tmp_path, pixel_limit):
    test = tmp_path / "test"
    shutil.copytree(trained_with_bad_files["data"] / "test", test)
    bad = write_exotic_files(test / "PNEUMONIA")
    gtf = _opened(trained_with_bad_files, tmp_path)
    gtf.Dataset_Params(dataset_path=str(test))
    gtf.Dataset()
    gtf.Evaluate()
    metrics = gtf.experiment.state["evaluation"]
    assert sorted(metrics["skipped_files"]) == sorted(str(p) for p in bad.values())
    assert metrics["num_images"] == 8

    gtf.Dataset_Params(on_corrupt="error")
    gtf.Dataset()
    with pytest.raises(CorruptImageError, match=r"bad-"):
        gtf.Evaluate()


def test_evaluate_refuses_a_class_whose_images_are_all_unreadable(
        trained_with_bad_files, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(trained_with_bad_files["data"] / "test", test)
    for image in (test / "NORMAL").iterdir():
        image.write_bytes(b"")
    gtf = _opened(trained_with_bad_files, tmp_path)
    gtf.Dataset_Params(dataset_path=str(test))
    gtf.Dataset()
    with pytest.raises(UnreadableDataError, match=r"class 'NORMAL' has no readable image in "
                                                  r"the evaluation split.*NORMAL 0 readable"):
        gtf.Evaluate()


# ---------------------------------------------------------------------------- CSV columns
def _csv_data(root, header, row):
    """A generated set (10 images per class) listed in a CSV; ``row(file, label, patient)``
    gives the row's cells in ``header``'s order."""
    data = small_data(root / "data")
    lines = [",".join(header)]
    for index, image in enumerate(sorted((data / "train").rglob("*.jpeg"))):
        relative = image.relative_to(data / "train").as_posix()
        lines.append(",".join(row(relative, image.parent.name, f"p{index // 2}")))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return data / "train", root / "labels.csv"


def test_csv_columns_named_in_any_order(tmp_path):
    images, csv = _csv_data(tmp_path, ["patient", "finding", "extra", "path"],
                            lambda f, label, p: [p, label, "x", f])
    config = DataConfig(dataset_path=str(images), path_to_csv=str(csv), file_column="path",
                        label_column="finding", group_column="patient")
    data = load_train_val(config)
    assert data.classes == ["NORMAL", "PNEUMONIA"]
    assert data.summary()["num_train_patients"] + data.summary()["num_val_patients"] == 10


def test_csv_default_columns_still_first_and_second(tmp_path):
    images, csv = _csv_data(tmp_path, ["file", "label"], lambda f, label, p: [f, label])
    assert load_train_val(DataConfig(dataset_path=str(images),
                                     path_to_csv=str(csv))).classes == ["NORMAL", "PNEUMONIA"]


def test_csv_errors_name_the_columns(tmp_path):
    images, csv = _csv_data(tmp_path, ["patient", "finding", "path"],
                            lambda f, label, p: [p, label, f])
    with pytest.raises(DatasetError, match=r"file column 'pth' is not in labels.csv; did you "
                                           r"mean 'path'\?.*\['patient', 'finding', 'path'\]"):
        load_train_val(DataConfig(dataset_path=str(images), path_to_csv=str(csv),
                                  file_column="pth", label_column="finding"))
    with pytest.raises(DatasetError, match=r"label column 'label' is not in labels.csv"):
        load_train_val(DataConfig(dataset_path=str(images), path_to_csv=str(csv),
                                  file_column="path", label_column="label"))
    with pytest.raises(DatasetError, match=r"file names read from column 'patient', labels "
                                           r"from column 'finding'"):
        load_train_val(DataConfig(dataset_path=str(images), path_to_csv=str(csv)))


def test_a_csv_row_without_a_label_is_refused_naming_the_line_and_column(tmp_path):
    images, csv = _csv_data(tmp_path, ["path", "finding"], lambda f, label, p: [f, label])
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ","
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"1 rows of labels.csv have no label \(lines \[4\]; "
                                           r"file names read from column 'path', labels from "
                                           r"column 'finding'"):
        load_train_val(DataConfig(dataset_path=str(images), path_to_csv=str(csv)))


def test_dataset_params_checks_the_column_settings(tmp_path):
    images, csv = _csv_data(tmp_path, ["id", "label", "path"], lambda f, label, p: [p, label, f])
    gtf = small_run(tmp_path / "ws", images, "csv")
    with pytest.raises(ConfigError, match="file_column"):
        gtf.Dataset_Params(path_to_csv=str(csv), file_column=3)
    gtf.Dataset_Params(path_to_csv=str(csv), file_column="path", label_column="label",
                       group_column="id")
    assert gtf.Dataset()["classes"] == ["NORMAL", "PNEUMONIA"]


def test_the_ieee8023_metadata_csv_reads_with_named_columns(shared_dir):
    folder = shared_dir / "data" / "covid-ieee8023-permissive"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"no ieee8023 data at {folder}")
    config = DataConfig(dataset_path=str(folder), path_to_csv=str(folder / "labels.csv"),
                        file_column="filename", label_column="label", group_column="patientid")
    data = load_train_val(config)
    assert data.classes == ["COVID-19", "normal", "other"]
    assert len(data.train) + len(data.val) == 101
    assert not set(data.train.groups) & set(data.val.groups)        # patients kept apart
    with pytest.raises(DatasetError, match=r"labels from column 'patientid'.*looks like an "
                                           r"identifier.*label_column="):
        load_train_val(DataConfig(dataset_path=str(folder),
                                  path_to_csv=str(folder / "labels.csv")))


def test_eda_counts_unreadable_files_instead_of_failing(tmp_path):
    data = small_data(tmp_path / "data", per_class=6)
    for image in sorted((data / "train" / "NORMAL").iterdir())[:3]:
        image.write_bytes(b"")                       # at least two land in the train split
    gtf = small_run(tmp_path / "ws", data / "train", "eda")
    report = gtf.EDA()
    sizes = report["image_sizes_sampled"]
    assert set(sizes) == {"unreadable", "32x32 L"} and sizes["unreadable"] >= 2
    assert sum(sizes.values()) == report["num_train"]


def test_the_shortcut_audit_features_mark_exotic_files_unreadable(tmp_path, pixel_limit):
    from xrayprototype.audit_features import file_features

    for path in write_exotic_files(tmp_path).values():
        assert file_features(path)["format"] == "unreadable", path.name
