"""Compose files: the loader (files, variables, override rules, profiles) into a typed project,
and a stack that runs it on any engine through the factory's public methods.

    project = load(["compose.yaml"], env={"TAG": "1.2"})
    stack = pycontain.compose("compose.yaml")      # the same, started
"""

from __future__ import annotations

from .loader import default_files, load
from .model import (
    Build,
    DependsOn,
    Healthcheck,
    Limits,
    NetworkDef,
    Port,
    Project,
    Service,
    ServiceNetwork,
    ServiceVolume,
)
from .source import ComposeFileError, Mark

__all__ = ["Build", "ComposeFileError", "DependsOn", "Healthcheck", "Limits", "Mark",
           "NetworkDef", "Port", "Project", "Service", "ServiceNetwork", "ServiceVolume",
           "default_files", "load"]
