"""Training one trial: the backbone registry and head/freeze API (``models``), pretrained weights
(``weights``), the per-trial defaults (``config``), batched inference (``inference``), the cached
features of a fixed extractor (``feature_cache``) and the Tune trainable (``trainable``)."""
