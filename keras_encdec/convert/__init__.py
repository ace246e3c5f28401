"""Checkpoint converters: transformers and keras-hub formats to and from ours."""
