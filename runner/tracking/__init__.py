"""What MLflow records of a run and how: the client and its store lock, the record's names and files,
provenance, the logged model, reading a stored run back, comparing two records.

Knows nothing of the math or the data: it imports neither runner.nn nor runner.data.
"""
