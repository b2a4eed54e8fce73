"""Where a run's state lives: protocols in `base`, implementations beside it."""
