"""Counterfeit's offline half: the 2014 GAN trained in PyTorch."""
