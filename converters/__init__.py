"""ONNX to TFLite conversion, quantization and validation, without TensorFlow (host side)."""
