"""The landmark engine: plain Python + torch/timm/faiss/numpy. Never imports Django."""
