"""rlvr: reinforcement learning with verifiable rewards, composed from Hydra configs.

Kept import-light on purpose: `python -m rlvr.run --cfg job` must not import torch.
"""

__version__ = "0.1.0"
