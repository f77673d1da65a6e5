"""Pictures: image grids, the paper's Figures 2 and 3, a conditional G's class figures,
the encoder's reconstructions and walks between real digits (§7.2), completions of each
mask family (§7.3), training curves, toy samples."""
