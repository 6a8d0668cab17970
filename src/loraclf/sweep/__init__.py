"""``loraclf sweep``: Optuna search of recipe keys under the exact budget (see run.py)."""
