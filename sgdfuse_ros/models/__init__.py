"""The networks (stage 1, refiner) as plain PyTorch modules."""
