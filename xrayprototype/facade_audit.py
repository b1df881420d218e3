"""The facade's shortcut-audit verb, ``Audit_Shortcuts``. The work is done by ``audit`` (the
features and the cross-validated classifier) and ``audit_report`` (report, files, summary)."""
from typing import Dict, Optional

from .audit import EXPLANATIONS_CSV, FOLDS, audit_records
from .audit_report import experiment_records, path_records, report_lines, save_audit, \
    state_summary
from .facade_base import FacadeBase


class AuditVerbs(FacadeBase):
    """Mixed into ``prototype``: checks of the data that need no trained model."""

    def Audit_Shortcuts(self, dataset_path: Optional[str] = None,
                        path_to_csv: Optional[str] = None, group_column: Optional[str] = None,
                        folds: int = FOLDS, seed: Optional[int] = None) -> Dict:
        """Can the label be predicted without looking at the lungs? A cross-validated
        classifier predicts each image's class from metadata alone (width, height, aspect,
        colour mode, bit depth, format, file size, DICOM tags, border and corner statistics
        where burned-in markers sit); its out-of-fold ROC-AUC, with a 95% stratified bootstrap
        interval, and the features that carry it are printed, with a WARNING at an AUC of
        ``audit.WARNING_AUC`` (0.70) or more. Needs no trained model: it works right after
        ``Dataset()``, and after ``Prototype(..., eval_infer=True)`` in a new process.

        Writes ``logs/shortcut_audit.json``, ``logs/shortcut_audit_features.csv`` (one row of
        features per image) and ``logs/shortcut_audit.png``, and keeps a summary in
        ``experiment.json`` (``shortcut_audit``). When ``Explain`` has written
        ``logs/explanations/explanations.csv``, the report also gives the share of heatmap
        mass outside the central lung region.

        Args:
            dataset_path: another data set to audit (a folder of class sub-folders, or one
                holding train/ and val/; an image folder with ``path_to_csv``; an .npz file).
                Default: the experiment's own train + validation images, plus its evaluation
                set when one is loaded.
            path_to_csv: a ``file,label`` CSV of the images in ``dataset_path``.
            group_column: the CSV column naming each image's patient (folds keep a patient's
                images together); default the experiment's setting, else the file-name pattern.
            folds: cross-validation folds (fewer when a class has fewer images or patients).
            seed: seeds the folds, the classifier and the bootstrap; default the experiment's.

        Returns:
            The audit: ``{"auc": {"estimate", "interval", ...}, "warning", "message",
            "top_features": [{"feature", "group", "importance", "share"}], "group_auc":
            {"size/format", "dicom", "border"}, "leaking_group", "explanations", "files", ...}``.

        Example:
            >>> gtf.Prototype("Covid", "audit"); gtf.Dataset_Params(dataset_path="mixed")
            >>> gtf.Dataset(); gtf.Audit_Shortcuts()["warning"]
            >>> gtf.Audit_Shortcuts(dataset_path="chest_xray/test")["auc"]["interval"]
        """
        experiment = self._require_experiment()
        seed = experiment.config.train.seed if seed is None else int(seed)
        if dataset_path is None:
            records, splits = experiment_records(experiment)
        else:
            records, splits = path_records(dataset_path, path_to_csv, experiment.config.data,
                                           seed, group_column)
        result, table = audit_records(records, seed=seed, folds=folds, splits=splits,
                                      explanations_csv=experiment.paths.logs / EXPLANATIONS_CSV)
        files = save_audit(result, table, experiment.paths.logs)
        for line in report_lines(result):
            self._say(line)
        experiment.state["shortcut_audit"] = state_summary(result, files)
        experiment.save_state(when_locked="skip")      # files are saved; the state when free
        return dict(result, files=files)
