"""Pictures: image grids, the paper's Figures 2 and 3, a conditional G's class figures,
training curves, toy samples."""
