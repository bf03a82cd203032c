"""ssvae: semi-supervised variational autoencoders whose latent space is the classifier."""
