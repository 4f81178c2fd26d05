"""The training loop and everything it owns: step, optimiser, validation, checkpoints, DDP."""
