"""Monk's apply_* transforms, reset_transforms and List_Transforms, called the way Monk's
tutorials call them: their effect on pixels, train-only augmentation, the deterministic
preprocessing reaching every split and eval_infer, and a tiny Train() on every backend."""
import warnings

import numpy as np
import pytest
from PIL import Image

from xrayprototype import prototype
from xrayprototype.backend import install_command, is_installed
from xrayprototype.config import AugmentationConfig
from xrayprototype.data import load_image
from xrayprototype.data.geometry import Geometry
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.data.transforms import augment
from xrayprototype.errors import ConfigError

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in ("pytorch", "gluon", "keras")]
ALL = dict(train=True, val=True, test=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("transforms") / "data",
                                      num_train_per_class=10, num_test_per_class=3,
                                      image_size=64, seed=2)


def _image(seed=0, size=32, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def _open(tmp_path, data, name="t", backend="pytorch", size=32):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Transforms", name, backend=backend)
    gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                freeze_base_network=False, num_epochs=1, use_pretrained=False)
    gtf.update_input_size(size)
    gtf.update_batch_size(8)
    return gtf


def _batch(gtf, split):
    """One batch of ``split`` as NHWC floats, with the stored (un-augmented, un-normalised)
    images it was made from."""
    experiment = gtf.experiment
    data = experiment.data or experiment.load_data()
    records = data.train if split == "train" else data.val
    batch = next(iter(experiment.loader(split, records, training=split == "train").epoch(0)))
    images = batch.images
    if experiment.backend.capabilities().layout == "NCHW":
        images = images.transpose(0, 2, 3, 1)
    store = experiment.store(split, records)
    return images, np.stack([store.get(int(i)) for i in batch.indices])


def _normalised(raw, mean, std):
    return (raw.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)


# ---------------------------------------------------------------------------- pixels
def test_flips_mirror_exactly_and_crops_of_the_whole_image_change_nothing():
    image, rng = _image(), np.random.default_rng(0)
    np.testing.assert_array_equal(augment(image, rng, AugmentationConfig(vertical_flip=1.0)),
                                  image[::-1])
    np.testing.assert_array_equal(augment(image, rng, AugmentationConfig(horizontal_flip=1.0)),
                                  image[:, ::-1])
    whole = AugmentationConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0])
    np.testing.assert_array_equal(augment(image, rng, whole), image)
    np.testing.assert_array_equal(augment(image, rng, AugmentationConfig(random_crop=32)), image)


def test_random_crop_is_a_window_of_the_image_enlarged_to_its_size():
    image = np.kron(_image(1, 8), np.ones((4, 4, 1), dtype=np.uint8))      # 32 px, 4 px blocks
    out = augment(image, np.random.default_rng(3), AugmentationConfig(random_crop=16), base=32)
    assert out.shape == image.shape and not np.array_equal(out, image)
    # the output is one 16 px window of the image, enlarged 2x
    def enlarged(y, x):
        window = Image.fromarray(np.ascontiguousarray(image[y:y + 16, x:x + 16]))
        return np.asarray(window.resize((32, 32), Image.BILINEAR)).astype(int)

    errors = [np.abs(out.astype(int) - enlarged(y, x)).mean()
              for y in range(17) for x in range(17)]
    assert min(errors) < 2 and sorted(errors)[1] > 10, sorted(errors)[:2]


def test_colour_jitter_lighting_and_perspective_change_pixels_as_documented():
    image, rng = _image(4), np.random.default_rng(0)
    grey = np.repeat(_image(5, channels=1), 3, axis=2)
    saturated = augment(grey, rng, AugmentationConfig(saturation=0.9, hue=0.3))
    assert np.abs(saturated.astype(int) - grey).max() <= 2          # grey has no colour
    assert not np.array_equal(augment(image, rng, AugmentationConfig(hue=0.3)), image)
    mid = np.full((16, 16, 3), 128, np.uint8)
    lit = augment(mid, rng, AugmentationConfig(lighting=0.1)).astype(int) - 128
    assert (lit == lit[0, 0]).all() and lit[0, 0].any()       # one shift per channel
    brighter = augment(mid, np.random.default_rng(1), AugmentationConfig(brightness=0.5))
    assert 64 <= brighter[0, 0, 0] <= 192 and (brighter == brighter[0, 0, 0]).all()
    warped = augment(image, rng, AugmentationConfig(perspective=0.8,
                                                    perspective_probability=1.0))
    assert warped.shape == image.shape and not np.array_equal(warped, image)
    never = AugmentationConfig(perspective=0.8, perspective_probability=0.0)
    np.testing.assert_array_equal(augment(image, rng, never), image)


def test_center_crop_is_the_centre_of_the_resized_image_and_grayscale_equal_channels(data):
    path = str(sorted((data / "train" / "NORMAL").iterdir())[0])
    resized = load_image(path, 64)
    geometry = Geometry(resize=64, center_crop=48, grayscale=False, input_size=48)
    cropped = geometry.finish(load_image(path, geometry.decode_size(48)), 48)
    np.testing.assert_array_equal(cropped, resized[8:56, 8:56])
    grey = Geometry(grayscale=True, input_size=48).finish(_image(2, 48), 48)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


# ---------------------------------------------------------------------------- batches
def test_augmentation_reaches_training_batches_only_and_normalize_every_batch(tmp_path, data):
    gtf = _open(tmp_path, data)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
    gtf.apply_normalize(mean=mean, std=std, **ALL)
    with pytest.warns(UserWarning, match="never augmented"):
        gtf.apply_random_vertical_flip(probability=1.0, train=True, val=True)
    images, raw = _batch(gtf, "train")
    np.testing.assert_allclose(images, _normalised(raw[:, ::-1], mean, std), atol=1e-5)
    images, raw = _batch(gtf, "val")                     # val=True was not obeyed: no flip
    np.testing.assert_allclose(images, _normalised(raw, mean, std), atol=1e-5)


def test_deterministic_preprocessing_applies_to_every_split_and_says_so(tmp_path, data):
    gtf = _open(tmp_path, data)
    with pytest.warns(UserWarning, match="applied to train, val, test and Infer"):
        gtf.apply_resize(64, train=True)                 # Monk code setting it for train only
    gtf.apply_center_crop(32, **ALL)
    gtf.apply_grayscale(**ALL)
    path = gtf.experiment.load_data().val.paths[0]
    expected = load_image(path, 64)[16:48, 16:48]
    stored = gtf.experiment.store("val", gtf.experiment.data.val).get(0)
    assert stored.shape == (32, 32, 3) and (stored[..., 0] == stored[..., 2]).all()
    luminance = expected.astype(float) @ [0.299, 0.587, 0.114]
    assert np.abs(stored[..., 0] - luminance).max() <= 1


def test_monk_flags_default_to_nowhere_refused_values_change_nothing_and_calls_replace(
        tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Transforms", "flags")
    with pytest.warns(UserWarning, match="applies to no images"):
        gtf.apply_random_vertical_flip(0.5)               # Monk: train=val=test=False
    assert gtf.List_Transforms()["set"]["train"] == {}
    gtf.apply_random_rotation(20, train=True)
    before = gtf.Summary()["config"]
    for call, name in ((lambda: gtf.apply_random_vertical_flip(1.5, train=True),
                        "vertical flip probability"),
                       (lambda: gtf.apply_color_jitter(hue=0.9, train=True), "hue"),
                       (lambda: gtf.apply_normalize(mean=[0.5, 2.0, 0.5], **ALL), "mean"),
                       (lambda: gtf.apply_random_resized_crop(32, scale=(0.9, 0.1),
                                                              train=True), "scale"),
                       (lambda: gtf.apply_center_crop(0, **ALL), "center crop")):
        with pytest.raises(ConfigError, match=name):
            call()
        assert gtf.Summary()["config"] == before
    gtf.apply_random_rotation(5, train=True)               # replaces the earlier 20 degrees
    gtf.apply_random_horizontal_flip(train=True)
    listed = gtf.List_Transforms()["set"]
    assert listed["train"]["apply_random_rotation / apply_random_affine"] == {"rotation": 5.0}
    assert listed["train"]["apply_random_horizontal_flip"] == {"horizontal_flip": 0.5}
    assert listed["val"] == listed["test"] == {}
    with pytest.warns(UserWarning, match="one symmetric range"):
        gtf.apply_random_affine(10, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=5,
                                train=True)
    assert gtf.List_Transforms()["set"]["train"][
        "apply_random_rotation / apply_random_affine"] == \
        {"rotation": 10.0, "shift": 0.2, "zoom": 0.1, "shear": 5.0}


def test_reset_transforms_clears_and_mean_subtraction_keeps_the_pixel_scale(tmp_path, data):
    gtf = _open(tmp_path, data)
    gtf.apply_mean_subtraction(train=True, val=True, test=True)      # Monk's [123, 116, 103]
    gtf.apply_random_horizontal_flip(1.0, train=True)
    images, raw = _batch(gtf, "val")
    np.testing.assert_allclose(images, raw.astype(np.float32) - [123, 116, 103], atol=1e-3)
    gtf.reset_transforms()
    assert gtf.List_Transforms()["set"] == {"train": {}, "val": {}, "test": {}}
    assert gtf.Summary()["config"]["data"]["normalization"] == "auto"
    images, raw = _batch(gtf, "train")
    assert not np.allclose(images, raw.astype(np.float32) - [123, 116, 103], atol=1)


# ---------------------------------------------------------------------------- train + reopen
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_with_transforms_and_reopen_with_the_same_preprocessing(tmp_path, data, backend):
    gtf = _open(tmp_path, data, name=backend, backend=backend)
    gtf.apply_resize(40, **ALL)
    gtf.apply_center_crop(32, **ALL)
    gtf.apply_normalize(mean=[0.45, 0.45, 0.45], std=[0.25, 0.25, 0.25], **ALL)
    gtf.apply_random_horizontal_flip(0.5, train=True)
    gtf.apply_random_vertical_flip(0.5, train=True)
    gtf.apply_color_jitter(brightness=0.2, contrast=0.2, train=True)
    gtf.apply_random_affine(10, translate=(0.1, 0.1), scale=(0.9, 1.1), train=True)
    gtf.apply_random_perspective(0.2, 0.5, train=True)
    gtf.apply_random_lighting(0.1, train=True)
    gtf.apply_random_resized_crop(32, scale=(0.6, 1.0), train=True)
    summary = gtf.Train()
    assert summary is not None
    image = str(sorted((data / "test" / "NORMAL").iterdir())[0])

    again = prototype(verbose=0, workspace=tmp_path / "ws")
    again.Prototype("Transforms", backend, eval_infer=True)
    saved = again.Summary()
    assert saved["preprocessing"]["mean"] == [0.45] * 3
    assert (saved["config"]["data"]["resize"], saved["config"]["data"]["center_crop"]) == (40, 32)
    again.reset_transforms(test=True)                      # Monk's eval notebook: kept here
    again.apply_center_crop(32, test=True)                 # repeats the trained model's: fine
    with pytest.raises(ConfigError, match="center_crop 32 -> 28"):
        again.apply_center_crop(28, test=True)
    result = again.Infer(img_name=image)
    assert result["predicted_class"] in ("NORMAL", "PNEUMONIA")
    np.testing.assert_allclose(again.experiment.normalizer().describe()["std"], [0.25] * 3)
    # Infer's pixels are the saved preprocessing's: resize 40, centre 32, mean/std 0.45/0.25
    experiment = again.experiment
    pixels = load_image(image, 40)[4:36, 4:36][None]
    batch = _normalised(pixels, 0.45, 0.25)
    if experiment.backend.capabilities().layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(experiment.predict_files([image]),
                               experiment.backend.predict(np.ascontiguousarray(batch)),
                               atol=1e-5)


def test_list_transforms_names_every_monk_apply_verb():
    listed = prototype(verbose=0).List_Transforms()["available"]
    names = " ".join(listed["random"] + listed["deterministic"])
    for verb in ("apply_center_crop", "apply_color_jitter", "apply_random_affine",
                 "apply_random_crop", "apply_random_resized_crop", "apply_grayscale",
                 "apply_random_horizontal_flip", "apply_random_vertical_flip",
                 "apply_random_perspective", "apply_random_rotation", "apply_random_lighting",
                 "apply_resize", "apply_normalize", "apply_mean_subtraction"):
        assert verb in names and callable(getattr(prototype, verb))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prototype(verbose=0).List_Transforms()


def test_monk_copy_from_reset_and_reapply_flow(tmp_path, data):
    """Monk's 'continue from an experiment' tutorial: copy_from keeps the transforms;
    reset_transforms() and reset_transforms(test=True) clear them; new ones replace them."""
    first = _open(tmp_path, data, name="first")
    first.apply_center_crop(28, **ALL)
    first.apply_random_vertical_flip(0.3, train=True)
    second = prototype(verbose=0, workspace=tmp_path / "ws")
    second.Prototype("Transforms", "second", copy_from=["Transforms", "first"])
    assert second.List_Transforms()["set"] == first.List_Transforms()["set"]
    second.reset_transforms()
    second.reset_transforms(test=True)
    assert second.List_Transforms()["set"] == {"train": {}, "val": {}, "test": {}}
    with pytest.warns(UserWarning, match="never augmented"):
        second.apply_random_horizontal_flip(train=True, val=True)
    second.apply_normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], **ALL)
    listed = second.List_Transforms()["set"]
    assert set(listed["train"]) == {"apply_random_horizontal_flip",
                                    "apply_normalize / apply_mean_subtraction"}
    assert set(listed["test"]) == {"apply_normalize / apply_mean_subtraction"}
    assert first.List_Transforms()["set"]["test"] == {"apply_center_crop": {"center_crop": 28}}
