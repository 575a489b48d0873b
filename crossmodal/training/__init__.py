"""The trainer package: data for training, losses, methods (MMSDNet and baselines) and the training loop."""
