"""Model weights: which files exist (registry), where they are (cache), getting them (download), reading
them safely (checkpoint), and the one facade from ``--model NAME|PATH`` to a runnable bag (loading).

Data flows one way: ``loading → cache → download``, ``loading → checkpoint → model``; ``registry`` is pure
data that the others read. ``download`` moves bytes only and imports no torch.
"""
