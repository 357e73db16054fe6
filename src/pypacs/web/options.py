"""What the HTTP front door needs to know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    ae_title: str = "PYPACS"  # RetrieveAETitle in QIDO-RS answers
    pn_case_insensitive: bool = True
    max_results: int = 0  # past it a search fails (413); 0: no maximum
    # PS3.18 8.3.4.4 lets the origin server cap a search that gives no limit.
    qido_default_limit: int = 1000
    stow_max_bytes: int = 2_147_483_648
