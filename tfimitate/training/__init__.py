"""The training loop and what it optimises."""
