"""An ensemble of experiments saved by the accuracy benchmarks, evaluated like one model: member
weights and the decision threshold chosen on the validation split the members share, then one
evaluation on the test split.

    python benchmarks/bench_ensemble.py --workspace W --project PneumoniaMNIST \\
        --members resnet18-40 efficientnet_lite0-64-imagenet \\
        --test ../shared/data/pneumoniamnist/pneumoniamnist_28.npz [--tune roc_auc] [--youden] [--tta]

``--tune``: weights on a 0.1 grid of the simplex maximising validation ROC-AUC (``roc_auc``) or
minimising validation log-loss (``log_loss``); the plain mean is kept unless a grid point is
strictly better; ``--tune none`` keeps the mean. ``--youden``: threshold by maximum Youden J on
the combined validation probabilities. ``--tta``: flip test-time augmentation for every member
(the evaluation without it, and the argmax rule, are reported beside). Writes ``benchmarks/results/ensemble-<name>.json``.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (evaluate_decision_rules, primary_rule,  # noqa: E402
                     print_test_figures, save_result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, help="where the members were saved")
    parser.add_argument("--project", required=True)
    parser.add_argument("--members", nargs="+", required=True, help="experiment names")
    parser.add_argument("--test", required=True, help="test folder, or an .npz (its test split)")
    parser.add_argument("--tune", choices=["roc_auc", "log_loss", "none"], default="roc_auc")
    parser.add_argument("--youden", action="store_true")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--name", default=None, help="the ensemble's name (default: from members)")
    args = parser.parse_args()
    from xrayprototype import ensemble

    name = args.name or f"{args.project}-" + "+".join(args.members)
    etf = ensemble(verbose=1, workspace=args.workspace)
    etf.Ensemble(name)
    for member in args.members:
        etf.Add_Experiment(args.project, member)
    tuning = etf.Tune_Weights(metric=args.tune, tta=args.tta) if args.tune != "none" else None
    threshold = etf.Select_Threshold(method="youden", tta=args.tta) if args.youden else None
    etf.Dataset_Params(dataset_path=args.test)
    etf.Dataset()
    evaluations = evaluate_decision_rules(etf, threshold, args.tta)
    figures = evaluations[primary_rule(threshold, args.tta)]
    result = {"command": "python benchmarks/bench_ensemble.py " + " ".join(sys.argv[1:]),
              "project": args.project, "members": args.members, "test": args.test,
              "weights": etf.state["evaluation"]["weights"], "weight_tuning": tuning,
              "threshold": threshold, "cores": os.cpu_count(), **figures}
    result["all_decision_rules"] = evaluations       # for information; the recipe's is above
    path = save_result(f"ensemble-{name}", result)
    for rule, row in evaluations.items():
        print_test_figures(rule, row)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
