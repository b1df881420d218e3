"""Keras training throughput through the facade against a plain ``model.fit``, in one run, on
the same images and the same model (the Keras ResNet18 of this backend, batch 32).

    python benchmarks/bench_keras_throughput.py [--images 256] [--sizes 64 224] [--epochs 3]
                                                [--repeats 1]

Images: a subset of the real Kermany train split from ../shared when present, otherwise the
embedded synthetic set. Both train the same network (random init, whole network trained,
Adam 1e-3, softmax cross-entropy). ``model.fit`` gets its best case: every image decoded,
resized and normalised into one array before timing, Keras' own compiled train function.
The facade runs its normal Train() (decode + cache in epoch 1, validation and checkpoints
after each epoch). Epoch 1 is warm-up for both (tracing, decoding); the figures are the mean
of the later epochs' training phase (the facade's own per-epoch record; a Keras callback
around each ``fit`` epoch), their best epoch (the least disturbed by other processes on a
shared machine), and the facade's end-to-end rate (Train() wall time per image). With
``--repeats R`` the facade and ``fit`` runs alternate R times and each side keeps its best run,
so that load from other processes hits both alike.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import facade_run, make_images, save_result  # noqa: E402

MODEL = "resnet18"


def _preloaded(train_dir: Path, size: int):
    """Every image decoded, resized and normalised by the core, as one NHWC array."""
    from xrayprototype.data import IMAGENET_MEAN, IMAGENET_STD, ImageStore, Normalizer, \
        scan_class_folders
    from xrayprototype.data import BatchLoader

    records = scan_class_folders(train_dir)
    loader = BatchLoader(ImageStore(records, size), 256, Normalizer(IMAGENET_MEAN, IMAGENET_STD),
                         "NHWC", shuffle=False)
    batches = list(loader.epoch(0))
    return (np.concatenate([b.images for b in batches]),
            np.concatenate([b.labels for b in batches]).astype(np.int64))


def plain_run(train_dir: Path, size: int, epochs: int) -> dict:
    """The textbook Keras loop: compile + fit on preloaded arrays."""
    import keras
    from xrayprototype.backends.keras.models import create_model
    from xrayprototype.config import ModelConfig

    images, labels = _preloaded(train_dir, size)
    keras.utils.set_random_seed(0)
    model = create_model(ModelConfig(MODEL, use_pretrained=False, freeze_base_network=False), 2)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(len(images) / (time.perf_counter() - self.started))

    timer = Timer()
    model.fit(images, labels, batch_size=32, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[timer])
    later = timer.rates[1:] or timer.rates
    return {"train_images_per_s": float(np.mean(later)), "best_epoch_images_per_s": max(later),
            "epoch1_images_per_s": timer.rates[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import xrayprototype.backends.keras  # noqa: F401  (threads and logging set up first)
    import tensorflow as tf

    results = {"command": "python benchmarks/bench_keras_throughput.py " + " ".join(sys.argv[1:]),
               "model": MODEL, "tf_intra_op_threads":
                   tf.config.threading.get_intra_op_parallelism_threads(), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, val_dir, source = make_images(Path(tmp) / "data", args.images)
        results.update(data=source, train_images=args.images, batch_size=32, epochs=args.epochs)
        for size in args.sizes:
            facades, plains = [], []
            for repeat in range(args.repeats):
                facades.append(facade_run(train_dir, val_dir, size, args.epochs,
                                          Path(tmp) / f"ws{repeat}", "keras", MODEL))
                plains.append(plain_run(train_dir, size, args.epochs))
            facade = max(facades, key=lambda r: r["train_images_per_s"])
            plain = max(plains, key=lambda r: r["train_images_per_s"])
            row = {"facade": facade, "plain_fit": plain, "repeats": args.repeats,
                   "ratio_facade_to_fit": facade["train_images_per_s"] / plain["train_images_per_s"],
                   "ratio_best_epoch_to_fit": facade["best_epoch_images_per_s"]
                   / plain["best_epoch_images_per_s"],
                   "ratio_end_to_end_to_fit":
                       facade["end_to_end_images_per_s"] / plain["train_images_per_s"]}
            results["sizes"][str(size)] = row
            print(f"{size:>4} px | facade {facade['train_images_per_s']:6.1f} img/s | model.fit "
                  f"{plain['train_images_per_s']:6.1f} img/s | ratio {row['ratio_facade_to_fit']:.3f}"
                  f" (best epoch {row['ratio_best_epoch_to_fit']:.3f})"
                  f" | end-to-end {facade['end_to_end_images_per_s']:6.1f} img/s "
                  f"({row['ratio_end_to_end_to_fit']:.3f})", flush=True)
    path = save_result("keras_throughput", results)
    print(f"data: {results['data']}, {args.images} training images, batch 32, {args.epochs} "
          f"epochs, model {MODEL}; saved {path}")


if __name__ == "__main__":
    main()
