"""Using a chosen model: ``tl.export`` writes a bundle (``export``, ``bundle``, ``onnx_export``),
``tl.predict`` scores new images with it (``predict``), ``gradcam`` shows where it looked."""
