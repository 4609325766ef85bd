"""Analysis beside training: Section 3's theory, t-SNE, sweeps (feature separability is an
evaluation metric: srat_engine.evaluation.separability)."""
