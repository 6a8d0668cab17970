"""Modeling code that ``loraclf export`` copies into a Hugging Face folder (it imports only torch and transformers)."""
