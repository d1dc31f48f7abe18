"""Blood-vessel segmentation of HiP-CT kidneys: the 4th-place SenNet + HOA recipe, runnable."""
