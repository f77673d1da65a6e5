"""The numpy-only contract shared by training and the service: the model card and the
seed contract (card.py) and paths in latent space (latent_paths.py). Training imports
nothing else from service/."""
