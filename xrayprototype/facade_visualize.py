"""The facade's network pictures, as Monk spells them: ``Visualize_With_Netron``,
``Visualize_Kernels`` and ``Visualize_Feature_Maps``. The work is done by ``visualize`` (grids,
export, serving) and each backend's ``visualize`` module (arrays, model files).

Each acts on the model as the open experiment holds it: in train mode the current weights (the
model is built from the settings when nothing was built yet), with ``eval_infer=True`` the
best saved weights, with ``resume_train=True`` the interrupted run's last epoch.
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .constraints import check_settings
from .facade_base import FacadeBase
from .validation import VISUALIZE_ARGUMENTS

#: what Monk's ``store_images_if_plot_fails=False`` becomes here, said at each such call
NO_WIDGET_NOTE = ("store_images_if_plot_fails=False: this library draws no interactive "
                  "notebook widget, so the grids are written as PNG files anyway (they are the "
                  "result; open them, or display them with IPython.display.Image).")


class VisualizationVerbs(FacadeBase):
    """Mixed into ``prototype``: the network's graph in Netron, its convolution kernels and
    the feature maps of an image, as files under the experiment's folder."""

    def _checked(self, **arguments) -> Dict:
        checked = check_settings("Visualize", arguments, VISUALIZE_ARGUMENTS)
        if not checked.get("store_images_if_plot_fails", True):
            self._say(NO_WIDGET_NOTE)
        return checked

    def Visualize_With_Netron(self, data_shape: Optional[Sequence[int]] = None,
                              port: Optional[int] = None, browse: bool = False) -> Dict:
        """Export the network with its weights to a file Netron draws, under the experiment's
        ``netron/`` folder (PyTorch: ``model.onnx``, or TorchScript ``model.pt`` without the
        ``onnx`` package; Gluon: ``model-symbol.json`` + ``model-0000.params``; Keras:
        ``model.keras``), and serve it on this machine with the ``netron`` package
        (``pip install 'xrayprototype[netron]'``).

        Monk's ``netron.start`` also opened a browser; here ``browse=False`` is the default
        (servers and notebooks have none): open the printed URL, or pass ``browse=True``.

        Args:
            data_shape: (channels, height, width) of the exported graph's input; default
                (3, input_size, input_size). Keras saves the model as built.
            port: the local port to serve on; None takes netron's first free one (8080,
                8081, ...). A port in use raises ConfigError.
            browse: open the URL in this machine's web browser.

        Returns:
            ``{"url": "http://127.0.0.1:<port>", "address": (host, port), "file": the
            exported file}``; stop the server with ``netron.stop(result["address"])``.

        Example:
            >>> served = gtf.Visualize_With_Netron(data_shape=(3, 224, 224), port=8081)
            >>> served["url"], served["file"]
        """
        from .visualize import export_for_netron, serve_with_netron

        checked = self._checked(data_shape=data_shape, port=port, browse=browse)
        experiment = self._require_experiment()
        file = export_for_netron(experiment, checked["data_shape"])
        served = serve_with_netron(file, checked["port"], checked["browse"])
        self._say(f"Netron serves {file} at {served['url']}: open it in a browser (stop with "
                  f"netron.stop({served['address']}))")
        return {**served, "file": str(file)}

    def Visualize_Kernels(self, store_images_if_plot_fails: bool = True,
                          layers: Union[None, str, List[str]] = None,
                          max_tiles: int = 64) -> Dict[str, str]:
        """Draw the kernels (weights) of the network's convolution layers, one PNG grid per
        layer under ``logs/kernels/`` (``000_<first layer>.png`` ...): a tile per output
        channel, in colour for a kernel over 3 input channels (the first layer's see RGB),
        else the grey mean over its inputs; one contrast per layer.

        Args:
            store_images_if_plot_fails: Monk's switch between an interactive widget and
                stored images; the PNG files are always written here (False says so).
            layers: a convolution layer's name or a list of them; None draws every one.
                A wrong name lists the close ones.
            max_tiles: the most output channels drawn per layer (the first ones).

        Returns:
            ``{layer name: PNG path}``, input side first.

        Example:
            >>> grids = gtf.Visualize_Kernels()
            >>> first_layer_png = next(iter(grids.values()))
        """
        from .visualize import write_kernel_grids

        checked = self._checked(store_images_if_plot_fails=store_images_if_plot_fails,
                                layers=layers, max_tiles=max_tiles)
        experiment = self._require_experiment()
        written = write_kernel_grids(experiment, checked["layers"], checked["max_tiles"])
        self._say(f"kernels of {len(written)} convolution layer(s) -> "
                  f"{experiment.paths.logs / 'kernels'}")
        return written

    def Visualize_Feature_Maps(self, image_path: str, store_images_if_plot_fails: bool = True,
                               layers: Union[None, str, List[str]] = None,
                               max_tiles: int = 64) -> Dict[str, str]:
        """Draw the outputs (feature maps) of the network's convolution layers for one image,
        preprocessed as the model's inputs are, one PNG grid per layer under
        ``logs/feature_maps/<image>/``: a tile per channel (viridis, each map its own
        contrast).

        Args:
            image_path: the image file.
            store_images_if_plot_fails: as ``Visualize_Kernels``; the PNG files are always
                written.
            layers: a convolution layer's name or a list of them; None draws every one.
            max_tiles: the most channels drawn per layer (the first ones).

        Returns:
            ``{layer name: PNG path}``, input side first.

        Example:
            >>> grids = gtf.Visualize_Feature_Maps("test/PNEUMONIA/person1_virus_6.jpeg")
        """
        from .visualize import write_feature_map_grids

        checked = self._checked(store_images_if_plot_fails=store_images_if_plot_fails,
                                layers=layers, max_tiles=max_tiles)
        experiment = self._require_experiment()
        written = write_feature_map_grids(experiment, image_path, checked["layers"],
                                          checked["max_tiles"])
        folder = Path(next(iter(written.values()))).parent if written else ""
        self._say(f"feature maps of {image_path} at {len(written)} convolution layer(s) -> "
                  f"{folder}")
        return written
