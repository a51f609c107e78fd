"""Data pipelines: image classification (`images`), text classification and SQuAD (`text`), the embedded
digits default (`digits`), and the loading / split helpers they share (`common`)."""
