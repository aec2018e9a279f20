"""Task events → notifications: the task state machine and the trigger rules."""
