"""Target assignment per version: in-graph, vectorized, XLA-compilable."""
