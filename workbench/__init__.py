"""Detection workbench: train detectors from five papers beside their baselines and look inside.

Importing the package is cheap and starts nothing (no database, no server): subpackages are
imported where they are used.
"""

__version__ = "0.1.0"
