"""Exports of a run to other tools; the only place box formats cross to them.

- :mod:`~workbench.export.fiftyone`: a run's traces and ground truth as a FiftyOne dataset
  (``workbench export fiftyone``);
- :mod:`~workbench.export.app`: the FiftyOne App on such a dataset (``workbench app``).

FiftyOne is imported inside the functions that use it: importing this package starts no
database and no server.
"""
