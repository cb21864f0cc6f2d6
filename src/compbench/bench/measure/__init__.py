"""Measurement: lookup timing, memory phases, devices and threads; methods never time themselves."""
