"""Datasets, transforms and batching.

- ``sample``: the ``Sample`` every dataset returns (image tensor, absolute ``xyxy`` boxes,
  labels ``1..C``, ignore flags);
- ``coco`` / ``voc``: ``CocoDetection`` and ``VocDetection``, with validation that names the
  file and the image or annotation at fault;
- ``shapes``: the built-in synthetic dataset (``generate_shapes``, ``builtin_shapes_root``);
- ``sources``: ``open_dataset(spec, split)`` turns a dataset spec into a dataset;
- ``check``: ``check_data(spec)``, a report of every split of a dataset;
- ``transforms``: augmentations on ``Sample`` and the preset pipelines;
- ``collate``: ``collate_samples`` and ``make_loader``.

COCO's ``[x, y, w, h]`` boxes exist only in this package (and in ``evaluation``): everything a
dataset returns is absolute ``xyxy``. Submodules are imported where they are used, so
``import workbench.data`` is cheap.
"""
