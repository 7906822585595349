"""Data: the data sets by name, CSV files, the train/test split and feature scaling, as NumPy arrays.

Imports nothing else of the project, and neither Hydra nor MLflow.
"""
