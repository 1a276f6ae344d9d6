"""Specialists: one embedder per domain (``runner.train_specialist``, pipeline ``specialists``)."""
