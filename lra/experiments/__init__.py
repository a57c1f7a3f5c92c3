"""Experiments: what runs or reads many runs (sweep, bench, approx, evaluate, report, plots).
Library code: functions return data and write files; lra.cli prints."""
