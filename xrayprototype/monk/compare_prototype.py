"""``from xrayprototype.monk.compare_prototype import compare``: Monk's comparison import.

Experiments of any backend are compared side by side; Monk's chart files
(``stats_best_val_acc.png``, ``stats_training_time.png``, ``stats_max_gpu_usage.png``, the
per-epoch ``train_accuracy.png`` ...) are written with Monk's names.

Example:
    >>> from xrayprototype.monk.compare_prototype import compare
    >>> ctf = compare(verbose=1)
    >>> ctf.Comparison("Sample-Comparison-1")
    >>> ctf.Add_Experiment("sample-project-1", "sample-experiment-1")
    >>> ctf.Generate_Statistics()
"""
from ..compare import compare

__all__ = ["compare"]
