"""The issues' API block, as written, in two processes, on a 200-image subset of the real
Kermany data (100 train + 100 test images, half per class), for one backend.

    .venv/bin/python benchmarks/kermany_subset_flow.py --backend pytorch [--model resnet18]

Process 1 trains (input 64, batch 16, 2 epochs, from scratch); process 2, started fresh from
another working directory, reopens the experiment with eval_infer=True, evaluates on the test
subset and infers one image and one folder. Prints both processes' figures and the workspace
tree; skips (exit 0 with a message) when ../shared is absent.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import kermany_subset, save_result, shared_dir  # noqa: E402

TRAIN = """
from xrayprototype import prototype
gtf = prototype(verbose=1, workspace={ws!r})
gtf.Prototype("Pneumonia", {experiment!r}, backend={backend!r})
gtf.Default(dataset_path="data/train", model_name={model!r}, freeze_base_network=False,
            num_epochs=2, use_pretrained=False)
gtf.update_input_size(64); gtf.update_batch_size(16)
gtf.Train()
"""
EVALUATE = """
import json
from xrayprototype import prototype
gtf = prototype(verbose=1, workspace={ws!r})
gtf.Prototype("Pneumonia", {experiment!r}, eval_infer=True)
gtf.Dataset_Params(dataset_path={test!r}); gtf.Dataset()
accuracy, per_class = gtf.Evaluate()
one = gtf.Infer(img_name={image!r})
folder = gtf.Infer(img_dir={folder!r})
print("RESULT", json.dumps({{"accuracy": accuracy, "per_class": per_class, "one": one,
                            "folder_count": len(folder)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="pytorch")
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    if shared_dir() is None:
        print("../shared is not present: nothing to run (set XRAYPROTOTYPE_SHARED).")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kermany_subset(root / "data" / "train", {"NORMAL": 50, "PNEUMONIA": 50})
        test = kermany_subset(root / "test", {"NORMAL": 50, "PNEUMONIA": 50}, split="test")
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        values = dict(ws=str(root / "ws"), experiment=f"{args.model}-{args.backend}",
                      backend=args.backend, model=args.model, test=str(test),
                      image=str(sorted((test / "NORMAL").iterdir())[0]), folder=str(test / "NORMAL"))
        for name, code, cwd in (("train", TRAIN, root), ("evaluate", EVALUATE, elsewhere)):
            run = subprocess.run([sys.executable, "-c", textwrap.dedent(code.format(**values))],
                                 cwd=cwd, capture_output=True, text=True)
            lines = [l for l in run.stdout.splitlines() if "it/s" not in l and "s/it" not in l]
            print(f"--- process {name} (exit {run.returncode})\n" + "\n".join(lines[-14:]))
            if run.returncode:
                print(run.stderr[-3000:])
                sys.exit(run.returncode)
        result = json.loads(lines[-1].split("RESULT", 1)[1])
        tree = sorted(str(p.relative_to(root / "ws")) for p in (root / "ws").rglob("*") if p.is_file())
        print("workspace:", *tree, sep="\n  ")
        state = json.loads((root / "ws" / "Pneumonia" / values["experiment"] / "experiment.json").read_text())
    path = save_result(f"kermany_subset_flow_{args.backend}", {
        "command": "python benchmarks/kermany_subset_flow.py " + " ".join(sys.argv[1:]),
        "test_accuracy_percent": result["accuracy"], "per_class": result["per_class"],
        "state_keys": sorted(state), "summary": state["summary"], "files": tree})
    print(f"test accuracy {result['accuracy']:.1f}% on 100 real test images; saved {path}")


if __name__ == "__main__":
    main()
