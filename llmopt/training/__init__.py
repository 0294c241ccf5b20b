"""Training: the encoder + trained-head classifier (head.py); fine-tuning grows here."""
