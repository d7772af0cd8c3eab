"""Keras layers: head decoding per version and the blocks the models use."""
