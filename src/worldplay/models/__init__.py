"""Neural network modules (Flax NNX): the autoencoder and, later, the dynamics transformer."""
