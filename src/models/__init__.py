"""Models: LightningModules and losses."""
