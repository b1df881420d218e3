"""Training throughput of the facade against a hand-written PyTorch loop, and of the data
pipeline alone, in one run, on the same images and the same model (ResNet18, batch 32).

    .venv/bin/python benchmarks/bench_throughput.py [--images 256] [--sizes 64 224] [--epochs 3]

Images: a subset of the real Kermany train split from ../shared when present, otherwise the
embedded synthetic set. Both loops train the same torchvision ResNet18 (random init, whole
network trained, Adam 1e-3); the hand-written loop gets its best case: every image decoded,
resized and normalised into one tensor before timing. The facade runs its normal Train()
(decode + cache in epoch 1, validation and checkpoints after each epoch). Epoch 1 is warm-up
for both; the figures are the mean of the later epochs, over ``--repeats`` alternating runs, each in a fresh process:

- train images/s: the training phase of an epoch (the facade's own per-epoch record);
- end-to-end: Train() wall time, validation and checkpoints included, per training image;
- pipeline images/s: the BatchLoader alone (decode + resize + normalise, no cache), and from
  its cache, to compare with the model's training rate (goal: >= 3x).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (alternate, facade_run, in_fresh_process, make_images,  # noqa: E402
                     mean_runs, save_result)


def plain_run(train_dir: Path, size: int, epochs: int) -> dict:
    """The hand-written loop: preload tensors, then the textbook step."""
    import torch
    from PIL import Image

    from xrayprototype.backends.pytorch._compat import import_torchvision

    tv = import_torchvision()
    files = sorted(p for p in Path(train_dir).rglob("*.jpeg"))
    labels = torch.tensor([0 if p.parent.name == "NORMAL" else 1 for p in files])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                       for p in files])
    images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
    images = images.contiguous(memory_format=torch.channels_last)   # the fast CPU layout
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 2)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    rates = []
    for epoch in range(epochs):
        order = torch.randperm(len(files))
        started = time.perf_counter()
        for start in range(0, len(files), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            loss.item()
        rates.append(len(files) / (time.perf_counter() - started))
    later = rates[1:] or rates
    return {"train_images_per_s": float(np.mean(later)), "best_epoch_images_per_s": max(later),
            "epoch1_images_per_s": rates[0]}


def pipeline_run(train_dir: Path, size: int) -> dict:
    from xrayprototype.config import AugmentationConfig
    from xrayprototype.data import (IMAGENET_MEAN, IMAGENET_STD, BatchLoader, ImageStore,
                                    Normalizer, scan_class_folders)

    records = scan_class_folders(train_dir)
    rates = {}
    for cached in (False, True):
        store = ImageStore(records, size, cache=cached)
        loader = BatchLoader(store, 32, Normalizer(IMAGENET_MEAN, IMAGENET_STD), "NCHW",
                             shuffle=True, augmentation=AugmentationConfig(horizontal_flip=0.5),
                             num_workers=2)
        for epoch in range(2 if cached else 1):     # cached: time the second (warm) epoch
            started = time.perf_counter()
            count = sum(len(batch.labels) for batch in loader.epoch(epoch))
            rate = count / (time.perf_counter() - started)
        rates["cached" if cached else "decode"] = rate
    return {"pipeline_images_per_s": rates["decode"], "pipeline_cached_images_per_s": rates["cached"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate facade and plain runs this many times (load on the "
                             "machine then hits both alike); figures are means over them")
    args = parser.parse_args()
    import torch

    results = {"command": "python benchmarks/bench_throughput.py " + " ".join(sys.argv[1:]),
               "torch_threads": torch.get_num_threads(), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, val_dir, source = make_images(Path(tmp) / "data", args.images)
        results.update(data=source, train_images=args.images, batch_size=32, epochs=args.epochs)
        for size in args.sizes:
            workspaces = (Path(tmp) / f"ws-{size}-{k}" for k in range(args.repeats))
            facades, plains = alternate(
                lambda: in_fresh_process(facade_run, train_dir, val_dir, size, args.epochs,
                                         next(workspaces)),
                lambda: in_fresh_process(plain_run, train_dir, size, args.epochs), args.repeats)
            facade, plain = mean_runs(facades), mean_runs(plains)
            pipeline = pipeline_run(train_dir, size)
            row = {"facade": facade, "plain": plain, **pipeline, "repeats": args.repeats,
                   "ratio_facade_to_plain": facade["train_images_per_s"] / plain["train_images_per_s"],
                   "ratio_best_epoch": facade["best_epoch_images_per_s"] / plain["best_epoch_images_per_s"],
                   "ratio_end_to_end_to_plain": facade["end_to_end_images_per_s"] / plain["train_images_per_s"],
                   "ratio_pipeline_to_training": pipeline["pipeline_images_per_s"] / plain["train_images_per_s"]}
            results["sizes"][str(size)] = row
            print(f"{size:>4} px | facade {facade['train_images_per_s']:6.1f} img/s | plain "
                  f"{plain['train_images_per_s']:6.1f} img/s | ratio {row['ratio_facade_to_plain']:.3f} "
                  f"(best epoch {row['ratio_best_epoch']:.3f})"
                  f" | end-to-end {facade['end_to_end_images_per_s']:6.1f} img/s "
                  f"({row['ratio_end_to_end_to_plain']:.3f}) | pipeline {pipeline['pipeline_images_per_s']:7.1f}"
                  f" img/s decode ({row['ratio_pipeline_to_training']:.1f}x training), "
                  f"{pipeline['pipeline_cached_images_per_s']:7.1f} cached", flush=True)
    path = save_result("throughput", results)
    print(f"data: {results['data']}, {args.images} training images, batch 32, {args.epochs} epochs;"
          f" saved {path}")


if __name__ == "__main__":
    main()
