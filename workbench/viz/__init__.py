"""Pure Plotly figure builders (arrays in, ``go.Figure`` out); widgets only wire them together.

Plotly is imported by the builder modules, never by ``import workbench``.

- :mod:`~workbench.viz.images`: an image with layers (ground truth, detections, proposals,
  suppressed boxes linked to their suppressors, a map), laid out by a method's record views;
- :mod:`~workbench.viz.nms`: NMS decisions and a threshold slider re-running NMS;
- :mod:`~workbench.viz.scores`: score histograms;
- :mod:`~workbench.viz.maps`: maps over the image (per pixel or per anchor cell), one or one
  panel per heatmap view of a record;
- :mod:`~workbench.viz.curves`: training curves, run comparisons, precision-recall curves;
- :mod:`~workbench.viz.proposals`: proposals' offsets to the ground truth by objectness;
- :mod:`~workbench.viz.tables`: metrics tables;
- :mod:`~workbench.viz.losses`: regression losses and their gradients against the error;
- :mod:`~workbench.viz.sampling`: IoU distributions of sampled negatives;
- :mod:`~workbench.viz.iou`: IoU histograms of training boxes, localisation gain per IoU,
  predicted against true IoU, recall against the matching IoU, AP per IoU threshold;
- :mod:`~workbench.viz.features`: per-level feature statistics of a pyramid;
- :mod:`~workbench.viz.anchor_refinement`: anchors before and after a refinement step, the
  anchor behind each detection, the IoU shift with the ground truth, filtered-anchor shares;
- :mod:`~workbench.viz.boxes`: the shared pieces (box outlines, the image layer, axes);
- :mod:`~workbench.viz.export`: self-contained HTML and PNG files;
- :mod:`~workbench.viz.explorer`: the ipywidgets explorer over traced images.
"""
