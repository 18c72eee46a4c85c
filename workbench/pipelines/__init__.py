"""Batch runs of notebooks with papermill (``workbench pipeline run FILE``), and the flat
notebook parameters turned into library objects.

- :mod:`~workbench.pipelines.spec`: the pipeline file format and its checks;
- :mod:`~workbench.pipelines.runner`: running the steps in order, resuming finished ones;
- :mod:`~workbench.pipelines.params`: notebook parameters -> ``TrainConfig``;
- :mod:`~workbench.pipelines.runs`: run-level steps the notebooks and the report call.
"""

from workbench.pipelines.runner import StepOutcome, run_pipeline
from workbench.pipelines.spec import Pipeline, PipelineError, Step, load_pipeline, parse_parameter

__all__ = ["Pipeline", "PipelineError", "Step", "StepOutcome", "load_pipeline", "parse_parameter", "run_pipeline"]
