"""DICOM as radiology software reads it (issue 15, part 3) and EXIF orientation.

Small DICOM files are written with pydicom (Explicit VR Little Endian, Part 10 files), and
the decoded pixels are checked against values computed by hand from the standard's formulas:

- modality LUT (PS3.3 C.11.1.1.2): ``value = stored * RescaleSlope + RescaleIntercept``;
- linear windowing (PS3.3 C.11.2.1.2.1, VOI LUT Function LINEAR), with c = Window Center,
  w = Window Width: ``x <= c - 0.5 - (w - 1) / 2 -> y_min``; ``x > c - 0.5 + (w - 1) / 2 ->
  y_max``; else ``((x - (c - 0.5)) / (w - 1) + 0.5) * (y_max - y_min) + y_min``; its output
  range [y_min, y_max] then maps linearly to 0..255, so the 8-bit value is
  ``round(255 * clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1))``;
- a VOI LUT Sequence: ``y = LUTData[clip(x - first_mapped, 0, entries - 1)]``, and the 8-bit
  value ``round(255 * y / (2**bits - 1))``, bits the descriptor's third value;
- MONOCHROME1: the inverse over the output range, i.e. ``255 - (the MONOCHROME2 value)``;
- without a VOI step, the library's stretch (min..max for images of at most 64 pixels).
"""
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xrayprototype.data.decode import image_header, load_image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (ExplicitVRLittleEndian, SecondaryCaptureImageStorage,  # noqa: E402
                         generate_uid)

#: a 4 x 4 ramp of stored 12-bit values, each a case of the formulas
RAMP12 = np.array([[0, 500, 999, 1000],
                   [1001, 1250, 1499, 1500],
                   [1501, 1750, 1999, 2000],
                   [2001, 2500, 3000, 4095]], dtype=np.uint16)


def write_dicom(path, pixels, photometric="MONOCHROME2", bits_stored=None, **tags):
    """A Part 10 file of ``pixels`` (its dtype gives Bits Allocated and the sign)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality = "DX"
    pixels = np.asarray(pixels)
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def decoded(path, channels=1):
    """The decoded image at its own (square) size: no resizing."""
    side = image_header(path)["width"]
    array = load_image(path, side, channels=channels)
    return array[:, :, 0] if channels == 1 else array


def linear_window(x, center, width):
    """PS3.3 C.11.2.1.2.1 LINEAR, output range mapped to 0..255 (see the module)."""
    t = (np.asarray(x, np.float64) - (center - 0.5)) / (width - 1) + 0.5
    return np.rint(255 * np.clip(t, 0.0, 1.0)).astype(np.uint8)


def test_window_of_a_12_bit_monochrome2_file(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", RAMP12, bits_stored=12,
                       WindowCenter=1500, WindowWidth=1001)
    expected = linear_window(RAMP12, 1500, 1001)
    np.testing.assert_array_equal(decoded(path), expected)
    # by hand: 1000 is at or below 1499.5 - 500 -> 0; 1500 -> (0.5/1000 + 0.5) * 255 = 127.6
    assert expected[0, 3] == 0 and expected[1, 3] == 128 and expected[2, 3] == 255


def test_monochrome1_is_inverted_over_the_window_not_by_the_image_maximum(tmp_path):
    dim = np.minimum(RAMP12, 1700).astype(np.uint16)      # its maximum is inside the window
    path = write_dicom(tmp_path / "m1.dcm", dim, "MONOCHROME1", 12,
                       WindowCenter=1500, WindowWidth=1001)
    np.testing.assert_array_equal(decoded(path), 255 - linear_window(dim, 1500, 1001))
    assert decoded(path)[0, 0] == 255          # stored 0 is white in MONOCHROME1


def test_rescale_then_window_in_modality_units(tmp_path):
    """CT-like: signed 16-bit, HU = stored * 1 - 1024, window 40 / 400 (soft tissue)."""
    stored = np.array([[0, 1024, 1064, 1124], [864, 824, 1264, 3000],
                       [-2000, 1000, 1100, 1200], [1224, 1225, 1500, 32767]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", stored, bits_stored=16, RescaleSlope=1,
                       RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    hounsfield = stored.astype(np.float64) - 1024
    np.testing.assert_array_equal(decoded(path), linear_window(hounsfield, 40, 400))
    # by hand: HU 0 -> ((0 - 39.5) / 399 + 0.5) * 255 = 102.26; HU 40 -> 127.8; HU 100 -> 166.2
    assert list(decoded(path)[0]) == [0, 102, 128, 166]


def test_rescale_slope_changes_where_the_window_falls(tmp_path):
    stored = np.arange(0, 4096, 256, dtype=np.uint16).reshape(4, 4)
    path = write_dicom(tmp_path / "slope.dcm", stored, bits_stored=12, RescaleSlope=0.5,
                       RescaleIntercept=-100, WindowCenter=600, WindowWidth=801)
    expected = linear_window(stored * 0.5 - 100, 600, 801)
    np.testing.assert_array_equal(decoded(path), expected)
    assert not np.array_equal(expected, linear_window(stored, 600, 801))


def test_signed_8_bit_window_and_first_of_several_windows(tmp_path):
    stored = np.array([[-128, -60, -50, -1], [0, 1, 50, 127],
                       [-51, -49, 49, 51], [10, 20, 30, 40]], dtype=np.int8)
    path = write_dicom(tmp_path / "s8.dcm", stored, bits_stored=8,
                       WindowCenter=[0, 100], WindowWidth=[101, 20])
    np.testing.assert_array_equal(decoded(path), linear_window(stored, 0, 101))


def _voi_lut(entries, first_mapped, bits, data):
    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first_mapped, bits])     # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in data])            # LUT Data
    return Sequence([item])


def test_8_bit_voi_lut_sequence_is_preferred_to_a_window(tmp_path):
    lut = np.rint(255 * np.sqrt(np.arange(256) / 255))           # a gamma curve
    path = write_dicom(tmp_path / "lut8.dcm", RAMP12, bits_stored=12,
                       VOILUTSequence=_voi_lut(256, 1000, 8, lut),
                       WindowCenter=100, WindowWidth=10)
    expected = lut[np.clip(RAMP12.astype(np.int64) - 1000, 0, 255)].astype(np.uint8)
    np.testing.assert_array_equal(decoded(path), expected)
    assert decoded(path)[1, 1] == 252       # by hand: stored 1250 -> entry 250 -> 252.49


def test_16_bit_voi_lut_on_monochrome1(tmp_path):
    lut = np.arange(4096) * 16                                     # 0 .. 65520
    path = write_dicom(tmp_path / "lut16.dcm", RAMP12, "MONOCHROME1", 12,
                       VOILUTSequence=_voi_lut(4096, 0, 16, lut))
    expected = 255 - np.rint(255 * lut[RAMP12] / 65535).astype(np.uint8)
    np.testing.assert_array_equal(decoded(path), expected)


def test_without_voi_the_library_stretch_of_modality_values(tmp_path):
    stored = np.arange(10, 170, 10, dtype=np.uint8).reshape(4, 4)
    mono2 = write_dicom(tmp_path / "plain8.dcm", stored)
    stretched = np.rint(255 * (stored - 10.0) / 150.0).astype(np.uint8)  # min..max
    np.testing.assert_array_equal(decoded(mono2), stretched)
    mono1 = write_dicom(tmp_path / "plain8-m1.dcm", stored, "MONOCHROME1")
    np.testing.assert_array_equal(decoded(mono1), 255 - stretched)
    rescaled = write_dicom(tmp_path / "plain16.dcm", stored.astype(np.uint16) * 40,
                           bits_stored=16, RescaleSlope=2, RescaleIntercept=-7)
    np.testing.assert_array_equal(decoded(rescaled), stretched)        # linear: same stretch


def test_rgb_ybr_and_multi_frame_files(tmp_path):
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
    np.testing.assert_array_equal(decoded(path, channels=3), rgb)
    ybr = write_dicom(tmp_path / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"),
                      "YBR_FULL")
    assert np.abs(decoded(ybr, channels=3).astype(int) - rgb).max() <= 2   # rounding only
    frames = np.stack([RAMP12, RAMP12[::-1]])
    multi = write_dicom(tmp_path / "multi.dcm", frames, bits_stored=12,
                        WindowCenter=1500, WindowWidth=1001)
    np.testing.assert_array_equal(decoded(multi), linear_window(RAMP12, 1500, 1001))


def test_enhanced_multi_frame_rescale_and_window_from_the_functional_groups(tmp_path):
    transform, window, shared = Dataset(), Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 2, -100
    window.WindowCenter, window.WindowWidth = 2500, 2001
    shared.PixelValueTransformationSequence = Sequence([transform])
    shared.FrameVOILUTSequence = Sequence([window])
    frames = np.stack([RAMP12, RAMP12[::-1]])
    path = write_dicom(tmp_path / "enhanced.dcm", frames, bits_stored=12,
                       SharedFunctionalGroupsSequence=Sequence([shared]))
    expected = linear_window(RAMP12 * 2.0 - 100, 2500, 2001)
    np.testing.assert_array_equal(decoded(path), expected)


def test_the_per_value_table_gives_the_pixel_by_pixel_values(tmp_path):
    from xrayprototype.data.dicom import _grayscale_steps, grayscale_pixels

    stored = np.random.default_rng(1).integers(-2048, 2048, (40, 40)).astype(np.int16)
    path = write_dicom(tmp_path / "t.dcm", stored, "MONOCHROME1", 12, RescaleSlope=0.7,
                       RescaleIntercept=-3.25, WindowCenter=100, WindowWidth=900,
                       VOILUTFunction="SIGMOID")
    dataset = pydicom.dcmread(str(path))
    table, direct = grayscale_pixels(stored, dataset), _grayscale_steps(stored, dataset)
    np.testing.assert_allclose(table.values, direct.values, rtol=0, atol=1e-9)
    assert table.output_range == direct.output_range


def test_a_dicom_without_pixel_data_is_a_corrupt_image_naming_why(tmp_path):
    from xrayprototype.data.decode import CorruptImageError

    path = write_dicom(tmp_path / "IM000009", RAMP12, bits_stored=12)
    ds = pydicom.dcmread(str(path))
    del ds.PixelData
    ds.save_as(str(path), enforce_file_format=True)
    with pytest.raises(CorruptImageError, match=r"IM000009.*no pixel data"):
        load_image(path, 8)


def test_a_compressed_dicom_without_its_codec_says_what_to_install(tmp_path):
    """JPEG Lossless (Process 14), common in CR / DX archives, needs pylibjpeg or gdcm."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    from xrayprototype.data.dicom import DicomSupportError

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(tmp_path / "IM000007", RAMP12, bits_stored=12)
    ds = pydicom.dcmread(str(path))
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 60])
    ds.save_as(str(path), enforce_file_format=True)
    with pytest.raises(DicomSupportError, match=r"IM000007.*JPEG Lossless.*pip install"):
        load_image(path, 8)


def test_dicom_is_recognised_by_content_whatever_its_name(tmp_path):
    from xrayprototype.data.sources import is_dicom, is_image_file

    dicom = write_dicom(tmp_path / "IM000001", RAMP12, bits_stored=12)
    uid_named = write_dicom(tmp_path / "1.2.840.113619.2.55", RAMP12, bits_stored=12)
    text = tmp_path / "README"
    text.write_text("not an image " * 20)
    directory = tmp_path / "DICOMDIR"
    directory.write_bytes(dicom.read_bytes())                 # a medium's index, no image
    assert is_image_file(dicom) and is_dicom(dicom) and is_image_file(uid_named)
    assert not is_image_file(text) and not is_image_file(directory)
    assert image_header(dicom) == {"width": 4, "height": 4, "channels": 1,
                                   "mode": "MONOCHROME2", "bits": 12, "format": "DICOM"}


# ---------------------------------------------------------------------------- a PACS export
def _pacs_export(root, per_class=6, side=32):
    """root/<class>/ST0/SE0/IM00000k: extension-less 12-bit files, half MONOCHROME1."""
    rng = np.random.default_rng(0)
    for label, (name, level) in enumerate((("NORMAL", 900), ("PNEUMONIA", 2600))):
        folder = root / name / "ST000000" / "SE000000"
        folder.mkdir(parents=True)
        for k in range(per_class):
            pixels = np.clip(rng.normal(level, 300, (side, side)), 0, 4095).astype(np.uint16)
            monochrome1 = k % 2 == 1
            if monochrome1:
                pixels = (4095 - pixels).astype(np.uint16)
            write_dicom(folder / f"IM{k:06d}", pixels,
                        "MONOCHROME1" if monochrome1 else "MONOCHROME2", 12,
                        WindowCenter=2048, WindowWidth=4096)
    return root


@pytest.fixture(scope="module")
def dicom_experiment(tmp_path_factory):
    """A tiny pytorch model trained one epoch on a PACS-style export of extension-less DICOMs."""
    pytest.importorskip("torch")
    from xrayprototype import prototype

    root = tmp_path_factory.mktemp("dicom")
    data = _pacs_export(root / "data")
    gtf = prototype(verbose=0, workspace=root / "ws")
    gtf.Prototype("Dicom", "pacs", backend="pytorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gtf.Default(dataset_path=str(data), model_name="mobilenet_v3_small",
                    freeze_base_network=False, num_epochs=1, use_pretrained=False)
        gtf.update_input_size(32)
        gtf.update_batch_size(4)
        summary = gtf.Train()
    return {"gtf": gtf, "data": data, "summary": summary}


@pytest.mark.slow
def test_an_extension_less_dicom_export_trains_and_infers(dicom_experiment):
    gtf, data = dicom_experiment["gtf"], dicom_experiment["data"]
    counts = gtf.experiment.data.summary()
    assert counts["num_train"] + counts["num_val"] == 12
    folder = data / "PNEUMONIA" / "ST000000" / "SE000000"
    results = gtf.Infer(img_dir=str(folder))
    assert len(results) == 6
    assert all(r["predicted_class"] in ("NORMAL", "PNEUMONIA") for r in results)


@pytest.mark.slow
def test_eda_on_a_dicom_folder_reads_sizes_and_bit_depth_from_the_headers(dicom_experiment):
    gtf = dicom_experiment["gtf"]
    report = gtf.EDA(check_missing=True, check_corrupt=True, save_img=True)
    sizes = report["image_sizes_sampled"]
    assert set(sizes) == {"32x32 MONOCHROME1 12-bit DICOM", "32x32 MONOCHROME2 12-bit DICOM"}
    assert sum(sizes.values()) == report["num_train"]
    assert report["corrupt_images"] == {} and report["missing_images"] == []
    assert all(Path(figure).is_file() for figure in report["figures"])


def test_the_audit_reads_tags_of_extension_less_dicoms(tmp_path):
    from xrayprototype.audit_features import file_features

    path = write_dicom(tmp_path / "IM000001", RAMP12, "MONOCHROME1", 12, Manufacturer="ACME")
    features = file_features(path)
    assert features["format"] == "DICOM" and features["dicom_manufacturer"] == "ACME"
    assert features["bit_depth"] == 12 and features["mode"] == "MONOCHROME1"


# ---------------------------------------------------------------------------- EXIF
def _upright(width=64, height=32):
    """Dark, with a bright top-left quarter: any turn or flip moves it."""
    array = np.full((height, width), 30, np.uint8)
    array[: height // 2, : width // 2] = 220
    return Image.fromarray(array).convert("RGB")


@pytest.mark.parametrize("suffix", [".jpeg", ".png"])
def test_exif_orientation_gives_the_upright_image(tmp_path, suffix):
    upright = _upright()
    exif = Image.Exif()
    exif[0x0112] = 6             # Orientation 6: the stored frame is to be turned 90 deg CW
    stored = upright.transpose(Image.Transpose.ROTATE_90)        # 90 deg counter-clockwise
    path = tmp_path / f"rotated{suffix}"
    stored.save(path, exif=exif)
    assert Image.open(path).size == (32, 64)
    header = image_header(path)
    assert (header["width"], header["height"]) == (64, 32)
    expected = np.asarray(upright.convert("L").resize((16, 16), Image.BILINEAR), np.float64)
    got = load_image(path, 16, channels=1)[:, :, 0].astype(np.float64)   # JPEG: draft too
    assert np.abs(got - expected).mean() < 12
    assert got[:8, :8].mean() > 150 and got[8:, 8:].mean() < 80
