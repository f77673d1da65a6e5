"""Experiments beyond the served model: the paper's Figure 1 and the ablation."""
