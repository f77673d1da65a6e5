"""Pictures: image grids, the paper's Figures 2 and 3, training curves, toy samples."""
