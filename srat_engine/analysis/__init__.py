"""Analysis beside training: Section 3's theory, feature separability, t-SNE, sweeps."""
