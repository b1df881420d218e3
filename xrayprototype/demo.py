"""The quick prototype on the embedded SYNTHETIC chest radiographs (``xrayprototype demo``).

It generates a small class-folder data set inside the workspace, trains, reopens the
experiment in a fresh facade (as a new process would), evaluates on the held-out test split
and predicts one image: the same verbs a user runs on real data.
"""
from pathlib import Path
from typing import Dict, Optional

from .data.synthetic import make_synthetic_chest_xrays
from .prototype import prototype
from .workspace import resolve_root, scratch_dir


def make_demo_data(workspace: Optional[str] = None, seed: int = 0) -> Path:
    """Write (or rewrite) the synthetic data set under ``<workspace>/_data/synthetic-chest-xray``."""
    folder = scratch_dir(resolve_root(workspace), "synthetic-chest-xray")
    return make_synthetic_chest_xrays(folder, num_train_per_class=100, num_test_per_class=30,
                                      image_size=128, seed=seed)


def run_demo(workspace: Optional[str] = None, backend: str = "pytorch", model: str = "resnet18",
             epochs: int = 5, input_size: int = 64, verbose: int = 1) -> Dict:
    """Train, evaluate and infer on the synthetic data; returns the figures."""
    data = make_demo_data(workspace)
    say = print if verbose else (lambda *_: None)
    say(f"synthetic demo data (not real radiographs) written to {data}")
    experiment = f"{model}-{backend}-synthetic"

    gtf = prototype(verbose=verbose, workspace=workspace)
    gtf.Prototype("Demo", experiment, backend=backend)
    gtf.Default(dataset_path=str(data / "train"), model_name=model, freeze_base_network=False,
                num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(input_size)
    gtf.update_batch_size(16)
    summary = gtf.Train()

    gtf = prototype(verbose=verbose, workspace=workspace)
    gtf.Prototype("Demo", experiment, eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(data / "test"))
    gtf.Dataset()
    accuracy, per_class = gtf.Evaluate()
    example = sorted((data / "test" / "PNEUMONIA").iterdir())[0]
    prediction = gtf.Infer(img_name=str(example))
    where = gtf.experiment.paths.dir
    say(f"test accuracy {accuracy:.1f}%; experiment saved in {where}")
    return {"experiment_dir": str(where), "test_accuracy": accuracy, "per_class": per_class,
            "training": summary, "example_prediction": prediction}
