"""The method as a library: image handling, fusion methods, masks, metrics, the pipeline."""
