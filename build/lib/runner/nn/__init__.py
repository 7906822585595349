"""The network math: activations, initialisation and prediction, scores, training (one network, or many
stacked). Imports nothing else of the project, and neither Hydra nor MLflow.
"""
