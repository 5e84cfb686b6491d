"""Shipped default weights (safetensors); see weights/README.md for the model cards."""
