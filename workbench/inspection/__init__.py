"""Looking inside a trained detector: traces recorded while predicting, saved with the run.

- :mod:`~workbench.inspection.traces`: the saved-trace format, :func:`load_traces`,
  :func:`save_traces`, :class:`TraceSet`, :class:`ImageTrace`;
- :mod:`~workbench.inspection.collect`: prediction with a recorder (used by
  ``workbench predict --trace``).

Typical use::

    from workbench.inspection import load_traces

    traces = load_traces("runs/frcnn", "val")
    for trace in traces:
        nms = trace.records["rcnn_nms"]        # boxes, scores, idxs, keep, suppressed_by, ...
        proposals = trace["rpn_proposals"]     # boxes (P, 4) xyxy, scores (P,)
"""

from workbench.inspection.traces import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ImageTrace,
    TraceSet,
    load_traces,
    save_traces,
    trace_dir,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ImageTrace", "TraceSet", "load_traces", "save_traces", "trace_dir"]
