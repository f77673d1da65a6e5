"""From a run to a served model: selection on validation, weight averaging, export."""
