"""Latency runners: the local LiteRT interpreter, Android over adb, a Linux board over ssh."""

from tdbnas.latency.runners.base import Runner, RunnerUnavailable, Timing

__all__ = ["Runner", "RunnerUnavailable", "Timing"]
