"""tdbnas.export: Keras lowering, int8 TFLite with detection post-processing, ONNX and
verification (the export issue)."""
