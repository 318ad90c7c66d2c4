"""The student stage: batches, multi-task loss, the Ray Train loop and evaluation."""
