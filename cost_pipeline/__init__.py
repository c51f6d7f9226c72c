"""cost_pipeline: who spends what on the cloud, and why, to the cent."""
