"""srat engine: imbalanced adversarial training (SRAT, its baselines and GAIRAT).

The engine never imports Textual: everything a person looks at lives in `srat_tui`.
"""

__version__ = "0.1.0"
