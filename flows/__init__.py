"""The continuous-training pipeline: data sources, validation, drift and the flows.

Kept free of imports so that ``import prefect_mlops.flows.data`` stays cheap (no Prefect, no GX).
"""
