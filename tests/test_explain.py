"""Explanations: the core's CAM math on hand-computed cases, agreement with the reference
implementation (pytorch-grad-cam) on the same model and layer, and the verbs Explain,
Top_Losses and Embeddings through the facade in a new process after eval_infer=True.

The saliency sanity check and the verbs on every backend are in test_explain_backends.py.
"""
import json
import shutil

import numpy as np
import pytest

from xrayprototype.errors import ConfigError
from xrayprototype.explain import (CENTRAL_LUNG_REGION, grad_cam, grad_cam_plus_plus,
                                   method_name, normalise, outside_lung_share, overlay,
                                   pointing_game, rank_correlation, upsample)


# ---------------------------------------------------------------------------- CAM math
def test_grad_cam_weights_channels_by_their_mean_gradient_and_clips_at_zero():
    activations = np.zeros((1, 2, 2, 2))
    activations[0, 0] = [[1, 0], [0, 0]]          # channel 0 lights the top left
    activations[0, 1] = [[0, 0], [0, 2]]          # channel 1 the bottom right
    gradients = np.zeros_like(activations)
    gradients[0, 0] = 0.5                         # weight 0.5
    gradients[0, 1] = -1.0                        # weight -1: its evidence is against
    np.testing.assert_allclose(grad_cam(activations, gradients)[0], [[0.5, 0], [0, 0]])


def test_grad_cam_plus_plus_matches_its_closed_form():
    rng = np.random.default_rng(0)
    a, g = rng.random((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    expected = np.zeros((2, 4, 4))
    for n in range(2):
        for c in range(3):
            alpha = g[n, c] ** 2 / (2 * g[n, c] ** 2 + a[n, c].sum() * g[n, c] ** 3)
            weight = (alpha * np.maximum(g[n, c], 0)).sum()
            expected[n] += weight * a[n, c]
    np.testing.assert_allclose(grad_cam_plus_plus(a, g), np.maximum(expected, 0), rtol=1e-10)


def test_normalise_and_upsample_give_maps_in_0_1_at_the_image_size():
    cams = np.array([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    scaled = normalise(cams)
    np.testing.assert_allclose(scaled[0], [[0, 0.25], [0.5, 1]], atol=1e-6)
    np.testing.assert_array_equal(scaled[1], 0)                 # a constant map is empty
    big = upsample(cams, 32)
    assert big.shape == (2, 32, 32) and big.dtype == np.float32
    assert big.min() >= 0 and big.max() <= 1
    assert big[0, -1, -1] > big[0, 0, 0]                        # the bright corner stays


def test_method_names_and_aliases():
    assert method_name("Grad-CAM") == "gradcam" and method_name("gradcampp") == "gradcam++"
    with pytest.raises(ConfigError, match="did you mean 'gradcam'"):
        method_name("gradcan")


def test_pointing_game_counts_peaks_inside_masks_against_the_mask_area():
    heatmap = np.zeros((8, 8))
    heatmap[2, 3] = 1.0
    inside = np.zeros((8, 8), bool)
    inside[1:4, 2:5] = True
    outside = np.zeros((8, 8), bool)
    outside[6:, 6:] = True
    result = pointing_game([heatmap, heatmap], [inside, outside])
    assert result["hits"] == 1 and result["hit_rate"] == 0.5
    assert result["random_point_rate"] == pytest.approx((9 + 4) / 64 / 2)


def test_outside_lung_share_of_a_corner_marker_and_of_the_lungs():
    top, bottom, left, right = CENTRAL_LUNG_REGION
    corner = np.zeros((100, 100))
    corner[:5, :5] = 1.0
    assert outside_lung_share(corner) == 1.0
    lungs = np.zeros((100, 100))
    lungs[int(top * 100) + 5:int(bottom * 100) - 5, int(left * 100) + 5:int(right * 100) - 5] = 1
    assert outside_lung_share(lungs) == 0.0
    assert np.isnan(outside_lung_share(np.zeros((10, 10))))


def test_rank_correlation_and_overlay():
    a = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    image = np.full((8, 8, 1), 100, np.uint8)
    picture = overlay(image, np.ones((4, 4)))
    assert picture.shape == (8, 8, 3) and picture.dtype == np.uint8
    assert not np.array_equal(picture[:, :, 0], picture[:, :, 2])   # coloured


# ---------------------------------------------------------------------------- reference
def test_grad_cam_equals_pytorch_grad_cam_on_the_same_model_and_layer():
    """The core's Grad-CAM (backend hook + explain.grad_cam + upsample) against
    pytorch-grad-cam's GradCAM on a ResNet-18's layer4, same weights, same inputs."""
    pytest.importorskip("torch")
    from xrayprototype.backends.pytorch._compat import import_torchvision
    import_torchvision()                   # torchvision 0.28 needs the guarded import first
    reference = pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xrayprototype.backend import create_backend
    from xrayprototype.config import ModelConfig

    backend = create_backend("pytorch")
    backend.seed(0)
    backend.build_model(ModelConfig("resnet18", use_pretrained=False,
                                    freeze_base_network=False), 2)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 128, 128, 3)).astype(np.float32)     # NHWC
    classes = np.array([0, 1, 1])
    result = backend.layer_gradients(images, classes)
    assert result.layer == "layer4"
    ours = upsample(grad_cam(result.activations, result.gradients), 128)

    import torch
    model = backend.model.eval()
    with reference.GradCAM(model=model, target_layers=[model.layer4]) as cam:
        theirs = cam(input_tensor=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                     targets=[ClassifierOutputTarget(int(c)) for c in classes])
    assert theirs.shape == ours.shape
    assert np.abs(ours - theirs).max() < 0.02, np.abs(ours - theirs).max()
    assert min(rank_correlation(a, b) for a, b in zip(ours, theirs)) > 0.99


# ---------------------------------------------------------------------------- the verbs
@pytest.fixture(scope="module")
def explained(trained_experiment, tmp_path_factory, run_python):
    """The trained PyTorch experiment copied, reopened in a NEW process with eval_infer=True;
    Explain, Evaluate with a threshold that makes errors, Top_Losses and Embeddings run
    there; their return values come back as JSON."""
    root = tmp_path_factory.mktemp("explained")
    shutil.copytree(trained_experiment["workspace"], root / "ws")
    data = trained_experiment["data"]
    code = f"""
import json
from xrayprototype import prototype
gtf = prototype(verbose=1, workspace="ws")
gtf.Prototype({trained_experiment['project']!r}, {trained_experiment['experiment']!r},
              eval_infer=True)
one = gtf.Explain(img_name={str(data / 'test' / 'PNEUMONIA')!r} + "/" +
                  sorted(__import__("os").listdir({str(data / 'test' / 'PNEUMONIA')!r}))[0])
folder = gtf.Explain(img_dir={str(data / 'test' / 'NORMAL')!r}, method="gradcam++",
                     class_name="PNEUMONIA")
try:
    gtf.Explain(img_dir={str(data / 'test' / 'NORMAL')!r}, layer="layer44")
    refused = ""
except Exception as err:
    refused = str(err)
gtf.Dataset_Params(dataset_path={str(data / 'test')!r}); gtf.Dataset()
gtf.update_decision_threshold(0.999)          # most PNEUMONIA images become errors
gtf.Evaluate()
top = gtf.Top_Losses(5)
embedding = gtf.Embeddings(method="tsne")
pca = gtf.Embeddings(method="pca")
clean = lambda r: {{k: v for k, v in r.items() if k != "heatmap"}}
json.dump({{"one": clean(one), "shape": list(one["heatmap"].shape),
           "folder": [clean(r) for r in folder], "refused": refused,
           "top": top.to_dict("records"), "embedding": embedding.to_dict("records"),
           "pca_rows": len(pca)}}, open("out.json", "w"), default=str)
"""
    run_python(code, cwd=root)
    out = json.loads((root / "out.json").read_text())
    out["dir"] = root / "ws" / trained_experiment["project"] / trained_experiment["experiment"]
    return out


def test_explain_one_image_writes_an_overlay_and_the_heatmap(explained):
    one = explained["one"]
    assert one["class_name"] == one["predicted_class"]        # the model's own class
    assert one["layer"] == "layer4" and one["method"] == "gradcam"
    assert explained["shape"] == [64, 64]                     # the input size
    heatmap = np.load(one["heatmap_npy"])
    assert heatmap.shape == (64, 64) and 0 <= heatmap.min() and heatmap.max() <= 1
    from PIL import Image
    assert Image.open(one["overlay_png"]).size == (224, 224)  # drawn at least 224 px
    assert one["overlay_png"].startswith(str(explained["dir"] / "logs" / "explanations"))


def test_explain_a_folder_for_a_named_class_with_gradcam_plus_plus(explained):
    folder = explained["folder"]
    assert len(folder) == 15
    assert [r["img_name"] for r in folder] == sorted(r["img_name"] for r in folder)
    assert {r["class_name"] for r in folder} == {"PNEUMONIA"}
    assert {r["predicted_class"] for r in folder} <= {"NORMAL", "PNEUMONIA"}
    assert {r["method"] for r in folder} == {"gradcam++"}
    table = (explained["dir"] / "logs" / "explanations" / "explanations.csv").read_text()
    assert table.count("\n") == 1 + 1 + 15                    # header, one, the folder


def test_a_wrong_layer_name_is_refused_with_the_close_names(explained):
    assert "layer44" in explained["refused"] and "'layer4'" in explained["refused"]


def test_top_losses_are_the_most_confidently_wrong_with_a_gallery(explained):
    top = explained["top"]
    assert 1 <= len(top) <= 5
    assert all(r["true_label"] != r["predicted_label"] for r in top)
    losses = [r["loss"] for r in top]
    assert losses == sorted(losses, reverse=True)
    assert all(r["loss"] == pytest.approx(-np.log(r["p_true"])) for r in top)
    assert (explained["dir"] / "logs" / "top_losses.png").stat().st_size > 5000
    assert (explained["dir"] / "logs" / "top_losses.csv").is_file()
    assert all(r["overlay_png"].endswith(".png") for r in top)


def test_embeddings_of_the_evaluation_set_mark_errors(explained):
    rows = explained["embedding"]
    assert len(rows) == 30 and explained["pca_rows"] == 30
    assert {r["true_label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    assert any(not r["correct"] for r in rows)                # the threshold made errors
    logs = explained["dir"] / "logs"
    for name in ("embeddings_tsne.png", "embeddings_tsne.csv", "embeddings_pca.png"):
        assert (logs / name).is_file()


def test_a_backend_without_spatial_layers_is_refused_clearly(trained_experiment, tmp_path):
    pytest.importorskip("torch")
    from xrayprototype.data.sources import ImageRecords
    from xrayprototype.experiment import Experiment
    from xrayprototype.explain import explain_records
    from xrayprototype.workspace import ExperimentPaths

    shutil.copytree(trained_experiment["workspace"], tmp_path / "ws")
    experiment = Experiment.open(ExperimentPaths(tmp_path / "ws", trained_experiment["project"],
                                                 trained_experiment["experiment"]))
    experiment.ready_for_prediction()
    experiment.backend.spatial_layers = lambda: []          # e.g. a vision transformer
    image = next((trained_experiment["data"] / "test" / "NORMAL").iterdir())
    with pytest.raises(ConfigError, match="no layer with a spatial output"):
        explain_records(experiment, ImageRecords([str(image)], [0], experiment.classes))


def test_cli_explain_calibrate_and_audit(trained_experiment, tmp_path, capsys):
    """``xrayprototype explain | calibrate | audit`` on a copy of the trained experiment."""
    from xrayprototype.cli import main

    shutil.copytree(trained_experiment["workspace"], tmp_path / "ws")
    which = ["--workspace", str(tmp_path / "ws"), "--project", trained_experiment["project"],
             "--experiment", trained_experiment["experiment"], "--quiet"]
    folder = trained_experiment["data"] / "test" / "NORMAL"
    assert main(["explain", *which, "--dir", str(folder), "--class-name", "PNEUMONIA"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert len(explained) == 15 and {r["class_name"] for r in explained} == {"PNEUMONIA"}
    assert main(["calibrate", *which]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fitted_on"] == "validation" and record["temperature"] > 0
    assert main(["audit", "--workspace", str(tmp_path / "ws"), "--quiet",
                 "--dataset", str(trained_experiment["data"] / "train")]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["num_images"] == 160 and audit["warning"] is False
    assert (tmp_path / "ws" / "_audits" / "train" / "shortcut_audit.json").is_file()
    assert main(["explain", *which, "--image", str(tmp_path / "missing.jpeg")]) == 2
