"""Fine-tuning: TrainingArguments, Trainer, callbacks, learning-rate schedules and data collators."""
