"""Data: volume registry, memory-mapped volume store, phantom dataset, index, projections."""
