"""The engine: one forward per batch gives logits and Grad-CAM maps; probes, sanity and the gallery ride on it."""
