"""The inference engine shared by pseudo-labelling, ``predict`` and the Kaggle notebook."""
