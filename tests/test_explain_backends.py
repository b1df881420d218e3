"""Explanations on every backend: a resnet18 trained briefly on synthetic chest X-rays, reopened
in a NEW process with eval_infer=True, where Explain (one image; a folder with gradcam++ for a
named class), Evaluate, Top_Losses and Embeddings run and write their files; the default
explanation layer is the last spatial block; and the saliency sanity check of Adebayo et al.
2018 ("Sanity checks for saliency maps", cascading model randomisation): with the head and the
last block re-initialised, the heatmaps must change.

Each backend trains in its own process (so no two frameworks share one), at 96 px, where
ResNet-18's last block gives 3 x 3 maps. Backends not installed, or not declaring
``capabilities().explanations``, are skipped with the reason shown.
"""
import json

import numpy as np
import pytest

from xrayprototype.backend import install_command, is_installed

BACKENDS = ("pytorch", "gluon", "keras")
#: input side; ResNet-18 reduces it 32-fold: a 3 x 3 map at the last block
SIZE = 96
TRAIN_PER_CLASS, TEST_PER_CLASS = 60, 10
EPOCHS, BATCH = 5, 16
#: the sanity check's bound on the mean Spearman correlation, over the test images (each
#: explained for its true class; empty trained maps left out), between the trained model's
#: Grad-CAM maps and those after re-randomising the last block and the head. The trained
#: model with itself gives 1.0; a map that ignored those weights would too. Measured with
#: these settings and seeds: pytorch -0.22, gluon 0.03, keras -0.30 (single images -0.90 to
#: 0.72: random weights point elsewhere, or nowhere). 0.5 sits about 0.5 above the highest
#: mean, several standard errors of a 20-image mean (per-image spread ~0.3), and far below 1.0.
MAX_RANDOMISED_CORRELATION = 0.5

TRAIN = """
import json, sys
from xrayprototype import prototype

gtf = prototype(verbose=0, workspace="ws")
gtf.Prototype("Explain", {backend!r}, backend={backend!r})
if not gtf.experiment.backend.capabilities().explanations:
    json.dump({{"explanations": False}}, open("trained.json", "w"))
    sys.exit(0)
gtf.Default(dataset_path="data/train", model_name="resnet18", freeze_base_network=False,
            num_epochs={epochs}, use_pretrained=False)
gtf.update_input_size({size})
gtf.update_batch_size({batch})
gtf.optimizer_adam(1e-3)
gtf.update_seed(0)
gtf.update_display_progress(False)
summary = gtf.Train()
json.dump({{"explanations": True, "summary": summary}}, open("trained.json", "w"), default=str)
"""

#: re-initialise the last block (stage) and the head in place, per framework
RANDOMISE = {
    "pytorch": """
def randomise(backend):
    import torch
    torch.manual_seed(1)
    for name in ("layer4", "fc"):
        for module in backend.model.get_submodule(name).modules():
            if hasattr(module, "reset_parameters"):    # convolutions, batch norms, linear
                module.reset_parameters()
""",
    "gluon": """
def randomise(backend):
    from xrayprototype.backends.gluon._compat import import_mxnet
    mx = import_mxnet()
    mx.random.seed(1)
    for block in (backend.net.features[7], backend.net.output):
        # parameters with their own init (batch norm: ones / zeros) keep it; the others Xavier
        block.collect_params().initialize(mx.init.Xavier(), ctx=backend.ctx, force_reinit=True)
""",
    "keras": """
def randomise(backend):
    import keras
    seed = 1
    model = backend.model
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    layers = [l for l in base.layers if l.name.startswith("layer4_")] + [model.get_layer("head")]
    for layer in layers:
        for weight in layer.weights:            # kernel, bias, gamma, beta, moving_mean, ...
            initializer = getattr(layer, weight.name + "_initializer")
            config = initializer.get_config()
            if "seed" in config:   # a built layer's initializer repeats its first values
                initializer = type(initializer).from_config(dict(config, seed=seed))
                seed += 1
            weight.assign(initializer(tuple(weight.shape), dtype=weight.dtype))
""",
}

VERBS = """
import json, os
import numpy as np
from xrayprototype import prototype
from xrayprototype.data.sources import ImageRecords
from xrayprototype.explain import explain_records, rank_correlation
{randomise}
gtf = prototype(verbose=0, workspace="ws")
gtf.Prototype("Explain", {backend!r}, eval_infer=True)
test = os.path.abspath("data/test")
first = sorted(os.listdir(test + "/PNEUMONIA"))[0]
one = gtf.Explain(img_name=test + "/PNEUMONIA/" + first)
folder = gtf.Explain(img_dir=test + "/NORMAL", method="gradcam++", class_name="PNEUMONIA")
gtf.Dataset_Params(dataset_path=test); gtf.Dataset()
accuracy, _ = gtf.Evaluate()
gtf.update_decision_threshold(0.9999)        # PNEUMONIA images become errors for Top_Losses
gtf.Evaluate()
top = gtf.Top_Losses(4)
embedding = gtf.Embeddings(method="tsne")

experiment = gtf.experiment
def maps(name):
    # Grad-CAM of every test image for its true class, with the model as it is now
    heatmaps, probabilities = [], []
    for label in experiment.classes:
        files = sorted(test + "/" + label + "/" + f for f in os.listdir(test + "/" + label))
        records = ImageRecords(files, [0] * len(files), experiment.classes)
        for r in explain_records(experiment, records, "gradcam", label,
                                 folder=os.path.abspath("sanity/" + name)):
            heatmaps.append(r["heatmap"])
            probabilities.append(r["probability"])
    return heatmaps, probabilities
trained, p_trained = maps("trained")
again, _ = maps("again")
randomise(experiment.backend)
randomised, p_randomised = maps("randomised")
clean = lambda r: {{k: v for k, v in r.items() if k != "heatmap"}}
json.dump({{"accuracy": accuracy, "one": clean(one), "shape": list(one["heatmap"].shape),
           "folder": [clean(r) for r in folder], "top": top.to_dict("records"),
           "embedding_rows": len(embedding),
           "spatial_layers": experiment.backend.spatial_layers(),
           "self": [rank_correlation(a, b) for a, b in zip(trained, again)],
           "randomised": [rank_correlation(a, b) for a, b in zip(trained, randomised)],
           "empty": [bool(np.ptp(m) == 0.0) for m in trained],
           "p_trained": p_trained, "p_randomised": p_randomised}},
          open("explained.json", "w"), default=str)
"""


@pytest.fixture(scope="module")
def synthetic_96(tmp_path_factory):
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("explain96") / "data",
                                      num_train_per_class=TRAIN_PER_CLASS,
                                      num_test_per_class=TEST_PER_CLASS, image_size=SIZE,
                                      seed=0)


@pytest.fixture(scope="module", params=BACKENDS)
def explained(request, synthetic_96, tmp_path_factory, run_python):
    """One backend's resnet18 trained in a process, then explained in a NEW one (eval_infer);
    the second process's results as a dict, with ``dir`` (the experiment folder)."""
    backend = request.param
    if not is_installed(backend):
        pytest.skip(f"{backend} not installed: {install_command(backend)}")
    root = tmp_path_factory.mktemp(f"explain-{backend}")
    (root / "data").symlink_to(synthetic_96, target_is_directory=True)
    run_python(TRAIN.format(backend=backend, epochs=EPOCHS, size=SIZE, batch=BATCH), cwd=root)
    if not json.loads((root / "trained.json").read_text())["explanations"]:
        pytest.skip(f"backend '{backend}' does not declare capabilities().explanations")
    run_python(VERBS.format(backend=backend, randomise=RANDOMISE[backend]), cwd=root)
    out = json.loads((root / "explained.json").read_text())
    out["backend"], out["dir"] = backend, root / "ws" / "Explain" / backend
    return out


@pytest.mark.slow
def test_explain_evaluate_top_losses_and_embeddings_write_their_files(explained):
    logs = explained["dir"] / "logs"
    one = explained["one"]
    assert explained["shape"] == [SIZE, SIZE]
    assert one["class_name"] == one["predicted_class"] and one["method"] == "gradcam"
    for key in ("overlay_png", "heatmap_npy"):
        assert one[key].startswith(str(logs / "explanations")) and \
            (logs / "explanations" / one[key].rsplit("/", 1)[1]).stat().st_size > 0
    assert np.load(one["heatmap_npy"]).shape == (SIZE, SIZE)
    folder = explained["folder"]
    assert len(folder) == TEST_PER_CLASS
    assert {r["class_name"] for r in folder} == {"PNEUMONIA"}
    assert {r["method"] for r in folder} == {"gradcam++"}
    csv = (logs / "explanations" / "explanations.csv").read_text()
    assert csv.count("\n") == 1 + 1 + TEST_PER_CLASS
    assert explained["accuracy"] >= 0.7, f"{explained['backend']} did not learn: " \
                                         f"{explained['accuracy']}"
    assert explained["top"], "the 0.9999 threshold made no error to show"
    assert all(r["true_label"] != r["predicted_label"] for r in explained["top"])
    assert (logs / "top_losses.png").stat().st_size > 5000 and (logs / "top_losses.csv").is_file()
    assert explained["embedding_rows"] == 2 * TEST_PER_CLASS
    assert (logs / "embeddings_tsne.png").is_file() and (logs / "embeddings_tsne.csv").is_file()


@pytest.mark.slow
def test_the_default_layer_is_the_last_spatial_block(explained):
    layers = explained["spatial_layers"]
    assert explained["one"]["layer"] == layers[-1]
    assert {r["layer"] for r in explained["folder"]} == {layers[-1]}


@pytest.mark.slow
def test_sanity_check_maps_change_when_the_last_block_and_head_are_randomised(explained):
    """Adebayo et al. 2018: a map that does not change when the weights it explains are
    re-randomised explains the input, not the model."""
    empty = np.array(explained["empty"])
    assert empty.sum() <= len(empty) // 4, f"{empty.sum()} trained maps are empty"
    correlations = np.array(explained["randomised"], dtype=float)[~empty]  # empty: no ranks
    # a randomised map that became empty (NaN: no ranking left) shares no ranking with it: 0
    correlations = np.nan_to_num(correlations, nan=0.0)
    assert np.allclose(np.array(explained["self"])[~empty], 1.0)   # same model, same maps
    assert not np.allclose(explained["p_trained"], explained["p_randomised"])
    assert correlations.mean() < MAX_RANDOMISED_CORRELATION, (explained["backend"],
                                                              correlations.round(2).tolist())
