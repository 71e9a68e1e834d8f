"""AlphaEdit and its MEMIT ablation for Hugging Face causal LMs, with the evaluation of the reproducibility study."""
__version__ = "0.1.0"
