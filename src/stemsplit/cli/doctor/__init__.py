"""``stemsplit doctor``: gather what is installed and usable (:mod:`.checks`) into a frozen report
(:mod:`.report`), then show it as text (:mod:`.render`) or JSON. Nothing here imports Rich or Typer."""

from __future__ import annotations

from stemsplit.cli.doctor.checks import collect, cuda_install_command
from stemsplit.cli.doctor.render import summary
from stemsplit.cli.doctor.report import DoctorReport, Finding, Severity

__all__ = ["DoctorReport", "Finding", "Severity", "collect", "cuda_install_command", "summary"]
