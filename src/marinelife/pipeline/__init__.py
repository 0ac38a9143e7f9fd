"""Orchestration: train → calibrate rejection → test → report; cross-validation; the demo."""
