"""The facade's explanation verbs: ``Explain``, ``Top_Losses`` and ``Embeddings``. The work is
done by ``explain`` (CAM math, overlays) and ``error_analysis`` (top losses, embeddings)."""
from typing import Dict, List, Optional, Union

from .data.sources import ImageRecords
from .errors import ExperimentError
from .facade_base import FacadeBase


class ExplanationVerbs(FacadeBase):
    """Mixed into ``prototype``: where the model looks and what it gets wrong, with the best
    saved weights (loaded once, as for ``Evaluate``)."""

    def Explain(self, img_name: Optional[str] = None, img_dir: Optional[str] = None,
                method: str = "gradcam", class_name: Optional[str] = None,
                layer: Optional[str] = None) -> Union[Dict, List[Dict]]:
        """Class activation maps of one image or of every image of a folder: a heatmap of
        where the evidence for a class lies, written as an overlay PNG and a ``.npy`` array
        under ``logs/explanations/`` (listed in ``logs/explanations/explanations.csv``).

        Args:
            img_name: an image file.
            img_dir: a folder whose images are all explained. Give exactly one of the two.
            method: "gradcam" (Selvaraju et al. 2017) or "gradcam++" (Chattopadhay et al.
                2018).
            class_name: the class to explain; default the class the model predicts (with the
                decision threshold, when one is set).
            layer: the convolutional layer whose activations are used; default the last
                spatial block before global pooling. A wrong name lists the close ones.

        Returns:
            ``{"img_name", "class_name", "predicted_class", "probability", "method",
            "layer", "heatmap" (float32 array in 0..1 at the input size), "overlay_png",
            "heatmap_npy", "peak" (row, column as fractions of the image),
            "outside_lung_share" (heatmap mass outside the central lung region)}``; for
            ``img_dir`` a list of them sorted by file name.

        Example:
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
            >>> gtf.Explain(img_name="test/PNEUMONIA/person1_virus_6.jpeg")["overlay_png"]
            >>> gtf.Explain(img_dir="test/NORMAL", method="gradcam++", class_name="PNEUMONIA")
        """
        from .evaluation import image_files
        from .explain import explain_records

        experiment = self._require_experiment()
        files = [str(f) for f in image_files(img_name, img_dir)]
        records = ImageRecords(files, [0] * len(files), experiment.classes)
        results = explain_records(experiment, records, method, class_name, layer)
        for result in results:
            share = result["outside_lung_share"]
            where = "empty map: no evidence for the class" if share != share else \
                f"{100 * share:.0f}% of the heatmap outside the central lung region"
            self._say(f"{result['img_name']}: {result['method']} of {result['class_name']} "
                      f"(p={result['probability']:.3f}, layer {result['layer']}), {where} "
                      f"-> {result['overlay_png']}")
        return results[0] if img_name is not None else results

    def Top_Losses(self, count: int = 16, method: str = "gradcam"):
        """The most confidently wrong images of the last ``Evaluate``: the wrong predictions
        with the highest loss, -log p(true class), each with the heatmap of the class it was
        wrongly given. Writes ``logs/top_losses.png`` (image, overlay, true and predicted
        class, probability, loss) and ``logs/top_losses.csv``.

        Args:
            count: how many images at most (fewer when fewer are wrong).
            method: "gradcam" or "gradcam++".

        Returns:
            A pandas DataFrame: file, true_label, predicted_label, p_predicted, p_true, loss,
            overlay_png, highest loss first.

        Example:
            >>> gtf.Evaluate()
            >>> gtf.Top_Losses(16)
        """
        from .error_analysis import TOP_LOSSES_PNG, top_losses

        experiment = self._require_experiment()
        if experiment.multi_label:
            raise ExperimentError("Top_Losses ranks -log p(true class) of one-label models; "
                                  "this model is multi-label. Read logs/predictions.csv of "
                                  "Evaluate() (true and predicted labels, each probability).")
        table = top_losses(experiment, count, method)
        if table.empty:
            self._say("top losses: no image of the evaluation is misclassified.")
        else:
            self._say(f"top losses: {len(table)} most confidently wrong images -> "
                      f"{experiment.paths.logs / TOP_LOSSES_PNG}")
            for _, row in table.iterrows():
                self._say(f"  {row['file']}: true {row['true_label']}, predicted "
                          f"{row['predicted_label']} (p={row['p_predicted']:.3f}), "
                          f"loss {row['loss']:.3f}")
        return table

    def Embeddings(self, method: str = "tsne"):
        """A 2-D map of the penultimate features (the head's input) of the evaluation set,
        coloured by true class with the misclassified images marked: are the classes
        separated, and where do the errors sit? Writes ``logs/embeddings_<method>.png`` and
        ``.csv`` (file, true_label, predicted_label, correct, x, y).

        Without an evaluation set (``Dataset_Params`` + ``Dataset`` in eval_infer mode) the
        validation split is used, as by ``Evaluate``.

        Args:
            method: "tsne" (scikit-learn t-SNE, seeded) or "pca".

        Returns:
            The coordinates as a pandas DataFrame.

        Example:
            >>> table = gtf.Embeddings(method="tsne")
            >>> table.groupby("true_label")[["x", "y"]].mean()
        """
        from .error_analysis import embeddings

        experiment = self._require_experiment()
        if experiment.multi_label:
            raise ExperimentError("Embeddings colours each image by its one true class and "
                                  "marks argmax errors; this model is multi-label (several "
                                  "labels per image). Read logs/predictions.csv of Evaluate().")
        records = experiment.eval_records
        if records is None:
            if experiment.data is None:
                raise ExperimentError("nothing to embed: call Dataset_Params(dataset_path="
                                      "'.../test') and Dataset() first.")
            records = experiment.data.val
        table = embeddings(experiment, records, method)
        errors = int((~table["correct"]).sum())
        self._say(f"{method} embedding of {len(table)} images ({errors} misclassified) -> "
                  f"{experiment.paths.logs / f'embeddings_{method}.png'}")
        return table
