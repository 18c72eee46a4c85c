"""Pure Plotly figure builders (arrays in, ``go.Figure`` out); widgets only wire them together.

Plotly is imported by the builder modules, never by ``import workbench``.
"""
