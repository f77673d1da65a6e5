"""The GAN of the paper: networks, losses, the optimiser, Algorithm 1 and Section 4's theory."""
