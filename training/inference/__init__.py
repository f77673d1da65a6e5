"""§7.2 and §7.3 of the paper: learned approximate inference (an encoder E(x) ~ z for a
trained G) and inpainting p(x_S | x_not S), with the latent-search baseline both are
measured against."""
