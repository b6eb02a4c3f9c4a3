"""TensorRT (gpu tier): full TensorRT where installed, else TensorRT-RTX."""
