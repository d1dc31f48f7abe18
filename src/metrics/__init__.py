"""Competition metric (surface Dice at tolerance 0) and run-length encoding."""
