"""Gluon training throughput of the facade against a hand-written Gluon loop, in one run, on the
same images and the same model (ResNet18 v1, batch 32).

    /tmp/venv-gluon/bin/python benchmarks/bench_gluon_throughput.py [--images 256] [--sizes 64 224] [--epochs 3]

Images: a subset of the real Kermany train split from ../shared when present, otherwise the
embedded synthetic set. Both loops train the same ResNet18 v1 (random init, whole network
trained, Adam 1e-3, hybridized with static_alloc / static_shape); the hand-written loop gets its
best case: every image decoded, resized and normalised into one NDArray before timing, then the
textbook ``autograd.record()`` / ``backward()`` / ``trainer.step()``. The facade runs its normal
Train() (decode + cache in epoch 1, validation and checkpoints after each epoch). Epoch 1 is
warm-up for both; the figures are the mean of the later epochs:

- train images/s: the training phase of an epoch (the facade's own per-epoch record);
- end-to-end: Train() wall time, validation and checkpoints included, per training image.

The machine may be shared: run it on an idle machine for figures worth quoting.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (alternate, facade_run, in_fresh_process, make_images,  # noqa: E402
                     mean_runs, save_result)

BATCH = 32


def _preload(train_dir: Path, size: int):
    from PIL import Image

    files = sorted(p for p in Path(train_dir).rglob("*.jpeg"))
    labels = np.array([0 if p.parent.name == "NORMAL" else 1 for p in files], np.float32)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                       for p in files]).astype(np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    images = ((pixels - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    return images, labels


def plain_run(train_dir: Path, size: int, epochs: int) -> dict:
    """The hand-written loop: preload NDArrays, then the textbook Gluon step."""
    from xrayprototype.backends.gluon._compat import import_mxnet

    mx = import_mxnet()
    from mxnet import autograd, gluon

    images, labels = _preload(train_dir, size)
    x_all, y_all = mx.nd.array(images), mx.nd.array(labels)
    mx.random.seed(0)
    net = gluon.model_zoo.vision.resnet18_v1(classes=2)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2))
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3}, kvstore=None)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    rates, count = [], len(labels)
    for epoch in range(epochs):
        order = mx.nd.array(np.random.default_rng(epoch).permutation(count))
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            batch = order[start:start + BATCH]
            x, y = mx.nd.take(x_all, batch), mx.nd.take(y_all, batch)
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(len(batch))
            loss.mean().asscalar()
        rates.append(count / (time.perf_counter() - started))
    return {"train_images_per_s": float(np.mean(rates[1:] or rates)), "epoch1_images_per_s": rates[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from xrayprototype.backend import get_backend_class

    versions = get_backend_class("gluon").framework_versions()
    results = {"command": "python benchmarks/bench_gluon_throughput.py " + " ".join(sys.argv[1:]),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "versions": versions,
               "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, val_dir, source = make_images(Path(tmp) / "data", args.images)
        results.update(data=source, train_images=args.images, batch_size=BATCH, epochs=args.epochs)
        for size in args.sizes:
            workspaces = (Path(tmp) / f"ws-{size}-{k}" for k in range(args.repeats))
            facades, plains = alternate(
                lambda: in_fresh_process(facade_run, train_dir, val_dir, size, args.epochs,
                                         next(workspaces), "gluon"),
                lambda: in_fresh_process(plain_run, train_dir, size, args.epochs), args.repeats)
            facade, plain = mean_runs(facades), mean_runs(plains)
            row = {"facade": facade, "plain": plain,
                   "ratio_facade_to_plain": facade["train_images_per_s"] / plain["train_images_per_s"],
                   "ratio_end_to_end_to_plain": facade["end_to_end_images_per_s"] / plain["train_images_per_s"]}
            results["sizes"][str(size)] = row
            print(f"{size:>4} px | facade {facade['train_images_per_s']:6.1f} img/s | plain gluon "
                  f"{plain['train_images_per_s']:6.1f} img/s | ratio {row['ratio_facade_to_plain']:.3f}"
                  f" | end-to-end {facade['end_to_end_images_per_s']:6.1f} img/s "
                  f"({row['ratio_end_to_end_to_plain']:.3f})", flush=True)
    path = save_result("gluon_throughput", results)
    print(f"data: {results['data']}, {args.images} training images, batch {BATCH}, "
          f"{args.epochs} epochs, OMP_NUM_THREADS={results['omp_num_threads']}; saved {path}")


if __name__ == "__main__":
    main()
