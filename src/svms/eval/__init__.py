"""Evaluation: the policy interface around a checkpoint (`policy`), open-loop action error
(`open_loop`), and the baseline-vs-SVMS comparison with its statistics, report and figures
(`compare`, `stats`, `report`, `plots`)."""
