"""The input side of the gate: candidate files, packing, preprocessing and review-set importers."""
