"""Export a model to runtime formats (ONNX, GGUF) and check the result against PyTorch."""
